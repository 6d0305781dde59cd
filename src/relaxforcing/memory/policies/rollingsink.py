"""Rolling Sink (arXiv 2602.07775): a sink-free window whose older slots are refilled from the first frames.

Rule (Rolling-Sink/Rolling-Sink @d7fc0d9, ``wan/modules/causal_model.py`` ~L230-285): a ``window``-frame cache
(21, ``sink_size=0``) of keys roped at absolute positions. Once the window has rolled (chunk start c >= window), the
clean pass of chunk c overwrites the previous chunk's slot ``c-f .. c-1`` with f frames of the first ``window - f``
generated frames (un-roped copies), re-roped at ``c-f .. c-1``. The source block sweeps ``0..17`` in steps of f,
forward on even sweeps and time-reversed (frames in reverse order) on odd ones: sweep ``(s // 18) % 2`` of slot
``s = c - f``. The slots stay replaced until they leave the window, so a chunk at t attends

    real frames below ``window - f`` | refilled slots ``window - f .. t-f-1`` | real ``t-f .. t-1`` | current

at positions equal to the slot indices (absolute). Frames ``0 .. window-f-1`` are pinned (they are both the early
window and the refill source); max_lag = f. Before the window rolls, plain absolute attention over every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class RollingSinkPolicy(MemoryPolicy):
    name = "rollingsink"
    window: int = 21

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window < 2 * self.chunk_frames or self.window % self.chunk_frames:
            raise ValueError(f"rollingsink: window={self.window} must be a multiple of the chunk size "
                             f"{self.chunk_frames}, at least two chunks")

    @property
    def sweep(self) -> int:
        """Frames the refill source sweeps: the window less one chunk (18)."""
        return self.window - self.chunk_frames

    @property
    def sink_frames(self) -> int:
        return self.sweep

    @property
    def max_lag(self) -> int:
        return self.chunk_frames

    def source(self, slot: int) -> list[int]:
        """The first-window frames copied into the f-frame slot starting at ``slot`` (in slot order)."""
        f, n = self.chunk_frames, self.sweep
        if (slot // n) % 2 == 0:
            left = slot % n
            return list(range(left, left + f))
        right = n - slot % n
        return list(range(right - 1, right - 1 - f, -1))

    def held(self, start: int, position: int) -> tuple[int, str]:
        """Frame and role held at absolute cache ``position`` while the chunk at ``start`` is denoised."""
        f = self.chunk_frames
        if position < self.sweep or position >= start - f:
            return position, "window"
        slot = position - (position - self.sweep) % f
        return self.source(slot)[position - slot], "sink"

    def select(self, store: StoreView, start: int) -> MemoryView:
        positions = list(range(max(0, start - self.sweep), start))
        held = [self.held(start, p) for p in positions]
        return MemoryView.shared(start, store.batch, [f for f, _ in held], positions, [r for _, r in held],
                                 self.queries(start))
