"""Self-Forcing dense window: the last ``window`` frames before the chunk, at absolute positions.

Layout ``[window | current]``; max_lag = window (18 for the released 21-frame model).
"""

from __future__ import annotations

from dataclasses import dataclass

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class DensePolicy(MemoryPolicy):
    name = "dense"
    window: int = 18

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 1:
            raise ValueError(f"dense: window={self.window} must be >= 1")

    @property
    def sink_frames(self) -> int:
        return 0

    @property
    def max_lag(self) -> int:
        return self.window

    @property
    def absolute_positions(self) -> bool:
        return True

    def select(self, store: StoreView, start: int) -> MemoryView:
        frames = list(range(max(0, start - self.window), start))
        return MemoryView.shared(start, store.batch, frames, frames, ["window"] * len(frames), self.queries(start))
