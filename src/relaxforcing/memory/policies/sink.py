"""Attention sink: frames ``0..sink-1`` plus the last ``tail`` frames, re-indexed contiguously before the chunk.

Layout ``[sink | tail | current]`` at positions ``t-sink-tail .. t+f-1`` (the Relax harness baseline);
max_lag = tail.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView, contiguous_positions
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class SinkPolicy(MemoryPolicy):
    name = "sink"
    sink: int = 3
    tail: int = 15

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink < 1 or self.tail < 1:
            raise ValueError(f"sink: sink={self.sink} and tail={self.tail} must both be >= 1")

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        return self.tail

    def select(self, store: StoreView, start: int) -> MemoryView:
        sinks = list(range(min(self.sink, start)))
        recent = list(range(max(self.sink, start - self.tail), start))
        frames = sinks + recent
        roles = ["sink"] * len(sinks) + ["tail"] * len(recent)
        positions = contiguous_positions(start, len(frames))
        return MemoryView.shared(start, store.batch, frames, positions, roles, self.queries(start))
