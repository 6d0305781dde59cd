"""Weight-free per-frame appearance levels: sharpness (variance of the Laplacian) and mean CIELAB colour."""

from __future__ import annotations

import cv2
import numpy as np


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Variance of the 3x3 Laplacian of each grey frame: ``[T, H, W, 3]`` uint8 → ``[T]`` (higher = sharper)."""
    return np.array([cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var() for f in frames])


def mean_lab(frames: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour (L in 0-100) per frame, on a 1/16-area thumbnail: ``[T, H, W, 3]`` → ``[T, 3]``."""
    h, w = frames.shape[1:3]
    size = (max(1, w // 4), max(1, h // 4))
    rows = []
    for frame in frames:
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        rows.append(cv2.cvtColor(small, cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(axis=0))
    return np.stack(rows)


def delta_e76(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIE76 colour difference (Euclidean distance in Lab) along the last axis."""
    return np.linalg.norm(np.asarray(lab_a) - np.asarray(lab_b), axis=-1)
