"""VBench motion smoothness protocol: drop odd frames, interpolate them back from even ones, score the error.

Source: ``vbench/motion_smoothness.py::MotionSmoothness.motion_score / vfi_score``. VBench interpolates with AMT-S;
the interpolator here is pluggable (:data:`~relaxforcing.evaluation.flow.InterpolateFn`).
"""

from __future__ import annotations

import cv2
import numpy as np

from relaxforcing.evaluation.flow import InterpolateFn


def motion_smoothness(frames: np.ndarray, interpolate: InterpolateFn) -> float:
    """Scores ``frames [T, H, W, 3]`` uint8: ``(255 - MAE(real odd, interpolated odd)) / 255``.

    Even frames 0, 2, 4, ... are kept; each midpoint between consecutive even frames is compared with the real
    odd frame 1, 3, 5, ...; a trailing odd frame with no even successor is ignored, as in VBench.
    """
    even, odd = frames[0::2], frames[1::2]
    if len(even) < 2:
        raise ValueError(f"motion smoothness needs at least 3 frames, got {len(frames)}")
    errors = [cv2.absdiff(interpolate(a, b), real).mean()
              for a, b, real in zip(even[:-1], even[1:], odd, strict=False)]
    return float((255.0 - np.mean(errors)) / 255.0)
