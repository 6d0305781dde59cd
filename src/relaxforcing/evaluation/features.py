"""Weight-free per-frame features for the consistency proxies: saliency-weighted colour histograms, gradients.

- Saliency is frequency-tuned (Achanta et al., CVPR 2009): the Lab distance of each blurred pixel from the frame's
  mean colour, on a thumbnail of 1/16 the area, scaled to [0, 1] per frame.
- ``salient_hist`` (subject): HSV histogram (16 hue x 4 saturation x 4 value bins) with saliency as pixel weight.
  Orderless, so a subject that moves keeps its score and one that vanishes or recolours loses it: the stand-in
  for DINO's object identity.
- ``surround_hist`` (background): the same histogram weighted by ``(1 - saliency)^2``, i.e. what the non-salient
  surroundings look like; foreground motion barely moves it, a colour or scene drift does. Stand-in for CLIP.
- ``grad_features`` (layout): Sobel x/y of the grey frame area-downsampled to 64 pixels wide, blurred; zero-mean
  by construction, so cosines span [-1, 1]. Sensitive to where things are, so also to ordinary motion.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]
"""``frames [T, H, W, 3] uint8 RGB -> features [T, D] float32``."""

HIST_BINS = (16, 4, 4)
GRAD_WIDTH = 64


def _downsample(frame: np.ndarray, width: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if w <= width:
        return frame
    return cv2.resize(frame, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    return _downsample(frame, max(16, frame.shape[1] // 4))


def saliency(thumb: np.ndarray) -> np.ndarray:
    """Frequency-tuned saliency of an RGB uint8 image ``[h, w, 3]`` → ``[h, w]`` in [0, 1] (all 0 if flat)."""
    lab = cv2.cvtColor(cv2.GaussianBlur(thumb, (5, 5), 0).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    distance = np.linalg.norm(lab - lab.reshape(-1, 3).mean(axis=0), axis=-1)
    return distance / max(float(distance.max()), 1e-6)


def _weighted_hist(thumb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """HSV histogram of ``thumb`` with per-pixel ``weights`` (uniform if they sum to ~0), summing to 1."""
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(np.int64)
    nh, ns, nv = HIST_BINS
    index = ((hsv[:, 0] * nh // 180) * ns + hsv[:, 1] * ns // 256) * nv + hsv[:, 2] * nv // 256
    weights = weights.ravel() if weights.sum() > 1e-6 else np.ones(index.size)
    hist = np.bincount(index, weights=weights, minlength=nh * ns * nv)
    return hist / hist.sum()


def salient_hist(frames: np.ndarray) -> np.ndarray:
    """Saliency-weighted HSV histograms: ``[T, H, W, 3]`` → ``[T, 256]``."""
    thumbs = [_thumbnail(f) for f in frames]
    return np.stack([_weighted_hist(t, saliency(t)) for t in thumbs]).astype(np.float32)


def surround_hist(frames: np.ndarray) -> np.ndarray:
    """``(1 - saliency)^2``-weighted HSV histograms: ``[T, H, W, 3]`` → ``[T, 256]``."""
    thumbs = [_thumbnail(f) for f in frames]
    return np.stack([_weighted_hist(t, np.square(1.0 - saliency(t))) for t in thumbs]).astype(np.float32)


def grad_features(frames: np.ndarray) -> np.ndarray:
    """Blurred Sobel gradients of a 64-pixel-wide grey thumbnail: ``[T, H, W, 3]`` → ``[T, 2 * 64 * h]``."""
    rows = []
    for frame in frames:
        grey = cv2.cvtColor(_downsample(frame, GRAD_WIDTH), cv2.COLOR_RGB2GRAY).astype(np.float32)
        grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        rows.append(np.concatenate([gx.ravel(), gy.ravel()]))
    return np.stack(rows)
