"""VBench dynamic degree on one clip: ~8 fps sampling, top-5% flow magnitude, threshold and count rule.

Source: ``vbench/dynamic_degree.py`` (``DynamicDegree.infer / get_score / set_params / check_move``). Only the flow
model is pluggable (:data:`~relaxforcing.evaluation.flow.FlowFn`); VBench uses RAFT-things with 20 iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from relaxforcing.evaluation.flow import FlowFn

TOP_FRACTION = 0.05
"""Share of pixels, by flow magnitude, averaged into a pair score."""


@dataclass(frozen=True)
class DynamicDegreeParams:
    """Per-clip constants of VBench's rule."""

    interval: int
    """Frame step of the ~8 fps sampling: ``max(1, round(fps / 8))``."""
    thres_px: float
    """A pair moves if its score exceeds ``max(1, 8 / fps) * 6 * min(H, W) / 256`` pixels."""
    count_num: int
    """The clip is dynamic once ``round(4 * N / 16)`` pairs move, N = number of sampled frames."""


@dataclass(frozen=True)
class DynamicDegreeResult:
    """Verdict and evidence for one clip."""

    dynamic: bool
    pair_scores_px: list[float]
    """Top-5% mean flow magnitude of each consecutive sampled pair, in pixels."""
    params: DynamicDegreeParams


def sampling_interval(fps: float) -> int:
    """VBench's frame step: every ``round(fps / 8)``-th frame, at least every frame."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return max(1, round(fps / 8))


def dynamic_degree_params(fps: float, height: int, width: int, num_sampled: int) -> DynamicDegreeParams:
    """VBench's ``set_params`` for a clip of ``num_sampled`` sampled frames of size ``height x width``."""
    factor = max(1.0, 8.0 / fps)
    thres = factor * 6.0 * min(height, width) / 256.0
    return DynamicDegreeParams(sampling_interval(fps), thres, round(4 * (num_sampled / 16.0)))


def top_magnitude_mean(flow: np.ndarray) -> float:
    """Mean of the largest ``int(H * W * 0.05)`` flow magnitudes of ``flow [H, W, 2]``, in pixels."""
    rad = np.sqrt(np.square(flow[..., 0], dtype=np.float32) + np.square(flow[..., 1], dtype=np.float32)).ravel()
    cut = int(rad.size * TOP_FRACTION)
    if cut < 1:
        raise ValueError(f"flow of {flow.shape[0]}x{flow.shape[1]} pixels is too small for a top-5% mean")
    return float(np.partition(rad, rad.size - cut)[rad.size - cut :].mean())


def check_move(pair_scores_px: list[float], thres_px: float, count_num: int) -> bool:
    """VBench's ``check_move``: True as soon as ``count_num`` scores exceed ``thres_px`` (False if no pairs)."""
    count = 0
    for score in pair_scores_px:
        count += score > thres_px
        if count >= count_num:
            return True
    return False


def clip_dynamic_degree(frames: np.ndarray, fps: float, flow_fn: FlowFn) -> DynamicDegreeResult:
    """Judges one clip ``frames [T, H, W, 3]`` uint8 moving or not with VBench's rule on ``flow_fn`` flow."""
    sampled = frames[:: sampling_interval(fps)]
    params = dynamic_degree_params(fps, frames.shape[1], frames.shape[2], len(sampled))
    scores = [top_magnitude_mean(flow_fn(a, b)) for a, b in zip(sampled[:-1], sampled[1:], strict=True)]
    return DynamicDegreeResult(check_move(scores, params.thres_px, params.count_num), scores, params)
