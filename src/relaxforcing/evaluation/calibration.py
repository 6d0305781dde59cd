"""Flow calibration on synthetic translated textures of known displacement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from relaxforcing.evaluation.dynamic_degree import top_magnitude_mean
from relaxforcing.evaluation.flow import FlowFn


@dataclass(frozen=True)
class CalibrationPoint:
    """Measured flow statistics for one known displacement."""

    shift_px: float
    """True displacement magnitude between the two frames, in pixels."""
    top5_px: float
    """Dynamic degree's statistic (mean of the top-5% magnitudes); equals ``shift_px`` for a perfect flow."""
    median_px: float
    """Median flow magnitude."""

    @property
    def ratio(self) -> float:
        """``top5_px / shift_px``: 1 is exact, below 1 under-estimates motion."""
        return self.top5_px / self.shift_px


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth multi-scale colour noise ``[height, width, 3]`` uint8, textured enough for any flow method."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for sigma in (1.5, 4.0, 10.0):
        noise = rng.standard_normal((height, width, 3)).astype(np.float32)
        acc += cv2.GaussianBlur(noise, (0, 0), sigma) * sigma
    acc = (acc - acc.mean()) / (acc.std() + 1e-6)
    return np.clip(127.5 + 50.0 * acc, 0, 255).astype(np.uint8)


def translated_pair(height: int, width: int, dx: float, dy: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two ``[height, width, 3]`` views of one texture whose content moves by ``(dx, dy)`` pixels (sub-pixel ok)."""
    margin = int(math.ceil(max(abs(dx), abs(dy)))) + 8
    big = texture(height + 2 * margin, width + 2 * margin, seed)
    moved = cv2.warpAffine(big, np.float32([[1, 0, dx], [0, 1, dy]]), (big.shape[1], big.shape[0]),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    window = (slice(margin, margin + height), slice(margin, margin + width))
    return big[window], moved[window]


def calibrate_flow(flow_fn: FlowFn, shifts_px: Sequence[float], height: int = 128, width: int = 128,
                   angle_deg: float = 30.0, seed: int = 0) -> list[CalibrationPoint]:
    """Measures ``flow_fn`` on textures translated by each of ``shifts_px`` along ``angle_deg``."""
    points = []
    for shift in shifts_px:
        if shift <= 0:
            raise ValueError(f"shifts must be > 0 pixels, got {shift}")
        dx, dy = shift * math.cos(math.radians(angle_deg)), shift * math.sin(math.radians(angle_deg))
        flow = flow_fn(*translated_pair(height, width, dx, dy, seed))
        median = float(np.median(np.hypot(flow[..., 0], flow[..., 1])))
        points.append(CalibrationPoint(float(shift), top_magnitude_mean(flow), median))
    return points
