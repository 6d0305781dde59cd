"""Consecutive-frame differences: VBench temporal flickering and the freeze fraction."""

from __future__ import annotations

import cv2
import numpy as np

FREEZE_MAE = 0.5
"""Consecutive frames closer than this mean absolute difference (0-255 scale) count as frozen."""


def consecutive_mae(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each consecutive pair of ``frames [T, H, W, 3]`` uint8: ``[T - 1]`` float."""
    if len(frames) < 2:
        raise ValueError(f"need at least 2 frames, got {len(frames)}")
    return np.array([cv2.absdiff(a, b).mean() for a, b in zip(frames[:-1], frames[1:], strict=True)])


def temporal_flickering(mae: np.ndarray) -> float:
    """VBench's ``(255 - mean_t MAE(f_t, f_{t+1})) / 255`` from :func:`consecutive_mae`; 1 = no change at all.

    Source: ``vbench/temporal_flickering.py::cal_score``.
    """
    return float((255.0 - mae.mean()) / 255.0)


def freeze_fraction(mae: np.ndarray, threshold: float = FREEZE_MAE) -> float:
    """Share of consecutive pairs whose MAE is below ``threshold``: 0 for moving video, 1 for a held frame."""
    return float((mae < threshold).mean())
