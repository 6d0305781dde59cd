"""Sink collapse (LoL, arXiv 2601.16914): how close each frame comes back to the video's first frames.

Memories that keep the first frames as attention sinks can pull a long video back toward them ("collapse" at fixed
frame indices whatever the seed). Per frame, the normalised L2 distance to the nearest sink frame,
``min_s ||x_t - x_s|| / ||x_s||``; a dip toward 0 late in a video is a return to its start.
"""

from __future__ import annotations

import numpy as np

SINK_VIDEO_FRAMES = 5
"""Video frames taken as the sink: Wan's first two latent frames (1 + 4 frames), relax's two sinks."""


def sink_distances(frames: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """``[T, ...]`` frames and ``[S, ...]`` sink frames (same shape per frame, any dtype) -> ``[T]`` distances."""
    if frames.shape[1:] != sinks.shape[1:] or not len(sinks):
        raise ValueError(f"frames {list(frames.shape)} and sinks {list(sinks.shape)} must match per frame")
    x = frames.reshape(len(frames), -1).astype(np.float64)  # [T, P]
    s = sinks.reshape(len(sinks), -1).astype(np.float64)  # [S, P]
    squared = (x * x).sum(1)[:, None] - 2 * x @ s.T + (s * s).sum(1)[None]  # [T, S] ||x - s||^2
    norms = np.maximum(np.linalg.norm(s, axis=1), 1e-12)
    return (np.sqrt(np.maximum(squared, 0)) / norms[None]).min(axis=1)


def lowest_late_distance(distances: np.ndarray, skip_fraction: float = 0.1) -> float:
    """The smallest distance after the first ``skip_fraction`` of the frames: how far the video came back."""
    start = max(1, int(len(distances) * skip_fraction))
    return float(distances[start:].min()) if len(distances) > start else float("nan")
