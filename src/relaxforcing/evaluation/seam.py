"""Motion across the seam of a continued video: does the continuation jump away from the clip it extends?

The seam is between the last given frame and the first generated one. Its optical-flow magnitude is compared with
the clip's own frame-to-frame magnitudes just before it: a continuation that picks up the motion moves across the
seam about as much as the clip moves from frame to frame; a jump (objects re-drawn elsewhere, a changed
background) moves far more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from relaxforcing.evaluation.flow import FlowFn, dis_flow


@dataclass(frozen=True)
class SeamMotion:
    """Mean optical-flow magnitudes (pixels per frame) around a seam."""

    seam: float
    """From the last frame before the seam to the first frame after it."""
    before: np.ndarray
    """Each consecutive pair of the clip before the seam, ``[P]``."""
    after: np.ndarray
    """Each consecutive pair after the seam, ``[P']``."""

    @property
    def within_spread(self) -> bool:
        """True when the seam moves no more than the clip's own largest frame-to-frame motion."""
        return bool(self.seam <= self.before.max())

    def summary(self) -> dict[str, float | bool]:
        return {"seam_px": self.seam, "before_mean_px": float(self.before.mean()),
                "before_max_px": float(self.before.max()), "after_mean_px": float(self.after.mean()),
                "after_max_px": float(self.after.max()), "within_spread": self.within_spread}


def seam_motion(frames: Iterable[np.ndarray], seam: int, window: int, flow: FlowFn | None = None) -> SeamMotion:
    """Flow magnitudes of the ``window`` frames on each side of frame ``seam`` (the first new frame).

    ``frames``: the video's RGB uint8 frames ``[H, W, 3]`` from frame 0 (read lazily; frames past the window are not
    read). Needs at least 2 frames on each side.
    """
    if window < 2:
        raise ValueError(f"the seam window must hold at least 2 frames on each side, got {window}")
    first = max(0, seam - window)
    picked = []
    for index, frame in enumerate(frames):
        if index >= seam + window:
            break
        if index >= first:
            picked.append(frame)
    if seam - first < 2 or len(picked) - (seam - first) < 2:
        raise ValueError(f"a seam at frame {seam} needs at least 2 frames on each side; the video has "
                         f"{first + len(picked)} frames")
    flow = flow or dis_flow()
    magnitudes = np.array([float(np.linalg.norm(flow(a, b), axis=-1).mean())
                           for a, b in zip(picked[:-1], picked[1:], strict=False)])
    at = seam - first - 1  # the pair (seam - 1, seam)
    return SeamMotion(seam=float(magnitudes[at]), before=magnitudes[:at], after=magnitudes[at + 1:])
