"""Relax Forcing: sinks + one relaxation-scored history frame + tail, with Hybrid RoPE (arXiv 2603.21366).

Layout ``[sink x2 | history x1 | tail x1 | current]`` = 7 frames at positions ``t-4, t-3 | t-2 | t-1 | t..t+2``.
Candidates are spread over the newer half of the middle region of a *virtual* ``reservoir``-frame cache (the
authors' physical 120-frame buffer); we store only what candidates can reach, so max_lag = 58 by default instead
of 117. Score r(h) = cos(p_h, p_sink) - lambda * cos(p_h, p_tail) on layer-0 key prototypes; selection runs once
per chunk and serves every layer, denoising step and the clean pass. Each sample of a batch picks its own history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView, contiguous_positions
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class RelaxPolicy(MemoryPolicy):
    name = "relax"
    aliases = {"lambda": "lambda_redundancy"}
    sink: int = 2
    hist: int = 1
    tail: int = 1
    candidates: int = 4
    lambda_redundancy: float = 2.0
    reservoir: int = 120
    contiguous_rope: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.sink, self.hist, self.tail, self.candidates) < 1:
            raise ValueError(f"relax: sink, hist, tail and candidates must be >= 1 (got sink={self.sink}, "
                             f"hist={self.hist}, tail={self.tail}, candidates={self.candidates})")
        if self.hist > self.candidates:
            raise ValueError(f"relax: hist={self.hist} cannot exceed candidates={self.candidates}")
        if self.reservoir < self.sink + self.tail + self.chunk_frames:
            raise ValueError(
                f"relax: reservoir={self.reservoir} cannot fit sink={self.sink} + tail={self.tail} + a "
                f"{self.chunk_frames}-frame chunk (need reservoir >= {self.sink + self.tail + self.chunk_frames}; "
                f"a reservoir below {self.sink + self.tail + self.chunk_frames + 2} never leaves the dense warm-up)")

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        """Computed by walking the virtual reservoir until it reaches steady state."""
        lag = 0
        for start in range(0, self.reservoir + self.chunk_frames, self.chunk_frames):
            local = self.local_start(start)
            if self.in_warmup(local):
                lag = max(lag, local - self.sink)
            else:
                lag = max(lag, self.tail, *(start - f for f in self.candidate_frames(start)))
        return lag

    @property
    def recent_frames(self) -> int:
        """Only the tail is read every chunk; history candidates lie far back and are read one at a time."""
        return self.tail

    # ---- the virtual reservoir ------------------------------------------------------------------------------

    def local_start(self, start: int) -> int:
        """Slot where the chunk would be written in the authors' reservoir (old frames fill slots before it)."""
        return min(start, self.reservoir - self.chunk_frames)

    def in_warmup(self, local_start: int) -> bool:
        return local_start <= self.sink + 1 + self.tail

    def frame_at(self, start: int, slot: int) -> int:
        """Global frame held by reservoir ``slot`` while the chunk at ``start`` is denoised."""
        return slot if slot < self.sink else start - self.local_start(start) + slot

    def candidate_slots(self, start: int) -> list[int]:
        """Reservoir slots of the history candidates (second half of the middle region), oldest first."""
        middle = self.local_start(start) - self.tail - self.sink
        if middle <= 1:
            return [self.sink + i for i in range(middle)]
        half = middle // 2
        count = min(self.candidates, middle - half)
        if count == 1:
            return [self.sink + half]
        points = torch.linspace(half, middle - 1, count + 1, dtype=torch.float32).to(torch.long)
        return [self.sink + int(i) for i in torch.unique(points)[:-1]]

    def candidate_frames(self, start: int) -> list[int]:
        return [self.frame_at(start, slot) for slot in self.candidate_slots(start)]

    # ---- selection ------------------------------------------------------------------------------------------

    def scores(self, store: StoreView, start: int, candidates: list[int]) -> torch.Tensor:
        """Relaxation score ``[B, K]`` of each candidate frame for every sample."""
        batch = store.batch
        sink = store.prototypes(torch.arange(self.sink).repeat(batch, 1))  # [B, D]
        tail = store.prototypes(torch.arange(start - self.tail, start).repeat(batch, 1))
        cand = torch.stack([store.prototypes(torch.tensor([[f]] * batch)) for f in candidates], dim=1)  # [B, K, D]
        to_sink = (cand * sink[:, None]).sum(-1)
        to_tail = (cand * tail[:, None]).sum(-1)
        return to_sink - self.lambda_redundancy * to_tail

    def select(self, store: StoreView, start: int) -> MemoryView:
        local = self.local_start(start)
        if self.in_warmup(local):  # dense over the whole cache at true positions
            frames = [self.frame_at(start, s) for s in range(local)]
            roles = ["sink" if f < self.sink else "window" for f in frames]
            return MemoryView.shared(start, store.batch, frames, contiguous_positions(start, len(frames)), roles,
                                     self.queries(start))
        candidates = self.candidate_frames(start)
        batch = store.batch
        scored = None
        if len(candidates) > self.hist and local - self.tail - self.sink > 1:
            scores = self.scores(store, start, candidates)  # [B, K]
            top = scores.topk(self.hist, dim=1).indices.sort(dim=1).values  # chronological order
            history = torch.tensor(candidates)[top]  # [B, hist]
            scored = tuple(tuple(zip(candidates, row, strict=True)) for row in scores.tolist())
        else:
            history = torch.tensor(candidates, dtype=torch.long).repeat(batch, 1)
        sinks = torch.arange(self.sink).repeat(batch, 1)
        tails = torch.arange(start - self.tail, start).repeat(batch, 1)
        frames = torch.cat([sinks, history, tails], dim=1)
        n_hist = history.shape[1]
        if self.contiguous_rope:
            positions = frames.clone()
        else:
            positions = torch.tensor(contiguous_positions(start, frames.shape[1])).repeat(batch, 1)
        roles = ("sink",) * self.sink + ("history",) * n_hist + ("tail",) * self.tail
        return MemoryView(start=start, frames=frames, positions=positions, roles=roles,
                          query_positions=torch.tensor(list(self.queries(start))), candidates=scored)
