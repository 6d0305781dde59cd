"""LongLive frame sink: frames ``0..sink-1`` plus the most recent frames, ``recent`` counting the current chunk.

Layout ``[sink | recent-f previous | current]``. Positions are absolute (LongLive v1.0, roped cache) or, with
``relative_rope=true``, window-relative ``0..n-1`` (LongLive's infinity variant). max_lag = recent - f.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class LongLivePolicy(MemoryPolicy):
    name = "longlive"
    sink: int = 3
    recent: int = 9
    relative_rope: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink < 1 or self.recent <= self.chunk_frames:
            raise ValueError(f"longlive: need sink >= 1 and recent > chunk size {self.chunk_frames} "
                             f"(got sink={self.sink}, recent={self.recent})")

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        return self.recent - self.chunk_frames

    @property
    def absolute_positions(self) -> bool:
        return not self.relative_rope

    def select(self, store: StoreView, start: int) -> MemoryView:
        sinks = list(range(min(self.sink, start)))
        previous = list(range(max(self.sink, start - self.max_lag), start))
        frames = sinks + previous
        roles = ["sink"] * len(sinks) + ["tail"] * len(previous)
        if self.relative_rope:
            positions = list(range(len(frames)))
            queries = range(len(frames), len(frames) + self.chunk_frames)
        else:
            positions, queries = frames, self.queries(start)
        return MemoryView.shared(start, store.batch, frames, positions, roles, queries)
