"""A deliberately dumb reference memory: every frame's K/V kept in a dict, attended by plain cat + rotate."""

from __future__ import annotations

import torch

from relaxforcing.memory.view import MemoryView
from relaxforcing.model.rope import apply_rope, rope_factors


class NaiveStore:
    """Same duck-typed surface as FrameStore (batch, num_frames, commit, prototypes, reader); never evicts."""

    def __init__(self, batch: int, tokens_per_frame: int):
        self.batch = batch
        self.tokens_per_frame = tokens_per_frame
        self.frames: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.num_frames = 0

    def commit(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        n = self.tokens_per_frame
        for i in range(keys[0].shape[1] // n):
            rows = slice(i * n, (i + 1) * n)
            self.frames[start + i] = ([k[:, rows].clone() for k in keys], [v[:, rows].clone() for v in values])
        self.num_frames = start + keys[0].shape[1] // n

    def layer0_keys(self, frame: int) -> torch.Tensor:
        return self.frames[frame][0][0]  # [B, T, H, D]

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        out = []
        for b in range(self.batch):
            tokens = torch.cat([self.layer0_keys(int(f))[b] for f in frames[b]], dim=0)  # [n*T, H, D]
            out.append(torch.nn.functional.normalize(tokens.float().mean(dim=(0, 1)), dim=-1))
        return torch.stack(out)

    def reader(self, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> NaiveReader:
        return NaiveReader(self, view, grid_hw, head_dim)


class NaiveReader:
    def __init__(self, store: NaiveStore, view: MemoryView, grid_hw: tuple[int, int], head_dim: int):
        self.store, self.view, self.grid, self.head_dim = store, view, grid_hw, head_dim

    def kv(self, layer: int):
        ks, vs = [], []
        for b in range(self.view.batch):
            frames = self.view.frames[b].tolist()
            k = torch.cat([self.store.frames[f][0][layer][b] for f in frames], dim=0)[None] if frames else None
            v = torch.cat([self.store.frames[f][1][layer][b] for f in frames], dim=0)[None] if frames else None
            if k is None:
                return (torch.zeros(self.view.batch, 0, 2, self.head_dim),) * 2 + (None,)
            factors = rope_factors(self.view.positions[b], self.grid, self.head_dim)[None]
            ks.append(apply_rope(k, factors))
            vs.append(v)
        return torch.cat(ks), torch.cat(vs), None
