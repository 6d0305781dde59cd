"""Drift of a per-clip metric: FramePack's start-end contrast and a fixed-width time curve.

FramePack (arXiv 2504.12626) defines ``|M(first 15% of frames) - M(last 15%)|``. Here M over a segment is the mean
score of the clips whose centre frame lies in it (the first or last clip when none does, as for short videos).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DRIFT_FRACTION = 0.15
CURVE_SECONDS = 10.0


@dataclass(frozen=True)
class Drift:
    """Start and end levels of a metric and their absolute difference."""

    start: float
    end: float
    delta: float
    """``|end - start|``."""


@dataclass(frozen=True)
class CurvePoint:
    """Mean of the clip scores whose centre falls in ``[t0_s, t1_s)``."""

    t0_s: float
    t1_s: float
    value: float
    num_clips: int


def _centres(spans: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.array([(start + stop) / 2 for start, stop in spans], dtype=np.float64)


def start_end_drift(values: Sequence[float], spans: Sequence[tuple[int, int]], num_frames: int,
                    fraction: float = DRIFT_FRACTION) -> Drift:
    """FramePack drift of clip ``values`` over clip ``spans`` ``[start, stop)`` of a ``num_frames`` video."""
    if len(values) != len(spans) or len(values) == 0:
        raise ValueError(f"need one value per clip span and at least one, got {len(values)} and {len(spans)}")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    vals, centres = np.asarray(values, dtype=np.float64), _centres(spans)
    head = centres < fraction * num_frames
    tail = centres >= (1 - fraction) * num_frames
    start = float(vals[head].mean() if head.any() else vals[0])
    end = float(vals[tail].mean() if tail.any() else vals[-1])
    return Drift(start, end, abs(end - start))


def time_curve(values: Sequence[float], spans: Sequence[tuple[int, int]], fps: float,
               bin_seconds: float = CURVE_SECONDS) -> list[CurvePoint]:
    """Per-``bin_seconds`` means of clip ``values``, binned by clip centre time; empty bins are left out."""
    if len(values) != len(spans):
        raise ValueError(f"need one value per clip span, got {len(values)} and {len(spans)}")
    if fps <= 0 or bin_seconds <= 0:
        raise ValueError(f"fps and bin_seconds must be > 0, got {fps}, {bin_seconds}")
    vals = np.asarray(values, dtype=np.float64)
    bins = np.floor(_centres(spans) / fps / bin_seconds).astype(int)
    return [CurvePoint(b * bin_seconds, (b + 1) * bin_seconds, float(vals[bins == b].mean()), int((bins == b).sum()))
            for b in np.unique(bins)]
