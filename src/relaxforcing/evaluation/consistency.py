"""VBench's first+previous cosine consistency on per-frame features (subject and background consistency).

Source: ``vbench/subject_consistency.py`` and ``vbench/background_consistency.py``; VBench-Long's clip-to-clip
score applies the same formula to the first frames of consecutive clips (``create_video_from_first_frames``).
"""

from __future__ import annotations

import numpy as np


def consistency_terms(features: np.ndarray) -> np.ndarray:
    """``s_t = (max(0, cos(f_{t-1}, f_t)) + max(0, cos(f_0, f_t))) / 2`` for t >= 1: ``[T, D]`` → ``[T - 1]``."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features [T >= 2, D], got shape {features.shape}")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    previous = np.maximum(0.0, np.sum(unit[:-1] * unit[1:], axis=1))
    first = np.maximum(0.0, unit[1:] @ unit[0])
    return (previous + first) / 2


def first_previous_consistency(features: np.ndarray) -> float:
    """Video score: the mean of :func:`consistency_terms` (1 = every frame looks like its predecessor and frame 0)."""
    return float(consistency_terms(features).mean())
