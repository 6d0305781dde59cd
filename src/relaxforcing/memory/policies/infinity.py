"""∞-RoPE KV flush: only the sink frame(s) and the last generated frame, with block-relative positions.

Layout ``[sink | last | current]`` placed at the top of the trained horizon: with horizon 21 and one sink,
sink -> 16, last -> 17, current -> 18..20 for every chunk. The flush happens every chunk (minimal-memory
baseline). max_lag = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView, contiguous_positions
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class InfinityPolicy(MemoryPolicy):
    name = "infinity"
    sink: int = 1
    horizon: int = 21

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink < 1 or self.horizon < self.sink + 1 + self.chunk_frames:
            raise ValueError(f"infinity: need sink >= 1 and horizon >= sink + 1 + chunk size "
                             f"(got sink={self.sink}, horizon={self.horizon})")

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        return 1

    def select(self, store: StoreView, start: int) -> MemoryView:
        sinks = list(range(min(self.sink, start)))
        last = [start - 1] if start > self.sink else []
        frames = sinks + last
        roles = ["sink"] * len(sinks) + ["tail"] * len(last)
        query_start = self.horizon - self.chunk_frames
        positions = contiguous_positions(query_start, len(frames))
        return MemoryView.shared(start, store.batch, frames, positions, roles, range(query_start, self.horizon))
