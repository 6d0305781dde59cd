"""Weight-free dense optical flow (OpenCV DIS, Farneback) and a flow-warped midpoint interpolator."""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(frame0 [H, W, 3] uint8 RGB, frame1) -> flow [H', W', 2] float32`` in pixels, frame0 → frame1."""

InterpolateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``(frame0 [H, W, 3] uint8, frame1) -> midpoint frame [H, W, 3] uint8`` (time t = 1/2)."""

FARNEBACK_PARAMS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
                    "poly_sigma": 1.2, "flags": 0}
"""OpenCV tutorial values for ``calcOpticalFlowFarneback``."""


def _gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def dis_flow(preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> FlowFn:
    """DIS flow (Kroeger et al. 2016) on grayscale frames at full resolution."""
    dis = cv2.DISOpticalFlow_create(preset)

    def flow(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        return dis.calc(_gray(frame0), _gray(frame1), None)

    return flow


def farneback_flow() -> FlowFn:
    """Farneback flow with :data:`FARNEBACK_PARAMS` on grayscale frames at full resolution."""

    def flow(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(_gray(frame0), _gray(frame1), None, **FARNEBACK_PARAMS)

    return flow


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))


def backward_warp(frame: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Samples ``frame`` at ``x + flow(x)`` (bilinear, border replicated): ``[H, W, C]`` → ``[H, W, C]``."""
    grid_x, grid_y = _pixel_grid(*flow.shape[:2])
    return cv2.remap(frame, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def flow_interpolator(flow_fn: FlowFn) -> InterpolateFn:
    """Midpoint interpolation from bidirectional flow, with Super SloMo's linear flow approximation at t = 1/2.

    ``F_{t->0} = (F_{1->0} - F_{0->1}) / 4`` and ``F_{t->1} = -F_{t->0}``; the midpoint is the mean of frame0
    warped by ``F_{t->0}`` and frame1 warped by ``F_{t->1}``.
    """

    def interpolate(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        f01, f10 = flow_fn(frame0, frame1), flow_fn(frame1, frame0)
        ft0 = 0.25 * (f10 - f01)
        warped0 = backward_warp(frame0, ft0).astype(np.float32)
        warped1 = backward_warp(frame1, -ft0).astype(np.float32)
        return np.clip(0.5 * (warped0 + warped1) + 0.5, 0, 255).astype(np.uint8)

    return interpolate
