"""Synthetic moving-shape videos and known-answer fault injections (freeze, hue ramp, noise ramp, deletion)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from relaxforcing.evaluation.calibration import texture

SHAPE_COLOURS = ((230, 60, 50), (40, 170, 230), (240, 200, 40), (90, 200, 90))


def moving_shapes(num_frames: int, height: int, width: int, speed_px: int, num_shapes: int = 3,
                  delete_shape_at: int | None = None, seed: int = 0) -> Iterator[np.ndarray]:
    """Yields ``[height, width, 3]`` uint8 frames: textured coloured squares bouncing over a static texture.

    Each square has side ``min(height, width) // 4`` and moves ``speed_px`` pixels per frame along x and y
    (integer steps, so motion is exactly linear between bounces). Shape 0 disappears from frame
    ``delete_shape_at`` on, if given.
    """
    if num_shapes > len(SHAPE_COLOURS) or num_frames < 1:
        raise ValueError(f"need 1 <= num_shapes <= {len(SHAPE_COLOURS)} and num_frames >= 1, "
                         f"got {num_shapes}, {num_frames}")
    rng = np.random.default_rng(seed)
    background = (0.35 * texture(height, width, seed) + 60).astype(np.uint8)
    side = min(height, width) // 4
    pattern = texture(side, side, seed + 1).astype(np.float32) / 255.0
    patches = [np.clip((0.55 + 0.6 * (pattern - 0.5)) * np.float32(c), 0, 255).astype(np.uint8)
               for c in SHAPE_COLOURS[:num_shapes]]
    pos = np.stack([rng.integers(0, height - side, num_shapes), rng.integers(0, width - side, num_shapes)], 1)
    vel = rng.choice([-speed_px, speed_px], size=(num_shapes, 2))
    limit = np.array([height - side, width - side])
    for t in range(num_frames):
        frame = background.copy()
        for i, (patch, (y, x)) in enumerate(zip(patches, pos, strict=True)):
            if delete_shape_at is None or i != 0 or t < delete_shape_at:
                frame[y : y + side, x : x + side] = patch
        yield frame
        pos = pos + vel
        bounce = (pos < 0) | (pos > limit)
        vel = np.where(bounce, -vel, vel)
        pos = np.clip(pos, 0, limit)


def freeze_from(frames: Iterable[np.ndarray], start: int) -> Iterator[np.ndarray]:
    """Duplicates frame ``start`` over every later frame (a stalled generator)."""
    held = None
    for t, frame in enumerate(frames):
        if t == start:
            held = frame
        yield frame if held is None else held


def hue_ramp(frames: Iterable[np.ndarray], num_frames: int, max_degrees: float) -> Iterator[np.ndarray]:
    """Rotates hue linearly from 0 at the first frame to ``max_degrees`` at frame ``num_frames - 1``."""
    for t, frame in enumerate(frames):
        hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
        shift = round(max_degrees / 2 * t / max(1, num_frames - 1))  # OpenCV hue unit is 2 degrees
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        yield cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def noise_ramp(frames: Iterable[np.ndarray], num_frames: int, max_sigma: float, seed: int = 0) -> Iterator[np.ndarray]:
    """Adds fresh Gaussian noise per frame, sigma rising linearly from 0 to ``max_sigma`` (0-255 scale)."""
    rng = np.random.default_rng(seed)
    for t, frame in enumerate(frames):
        sigma = max_sigma * t / max(1, num_frames - 1)
        noise = rng.standard_normal(frame.shape, dtype=np.float32) * sigma
        yield np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)
