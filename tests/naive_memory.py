"""A deliberately dumb reference memory: every frame's K/V kept in a dict, attended by plain cat + rotate."""

from __future__ import annotations

import torch

from relaxforcing.memory.view import MemoryView
from relaxforcing.model.rope import apply_rope, rope_factors
from relaxforcing.model.wan import MemoryKV


class NaiveStore:
    """Same duck-typed surface as FrameStore (batch, num_frames, commit / write + advance, prototypes, read); never
    evicts."""

    def __init__(self, batch: int, tokens_per_frame: int):
        self.batch = batch
        self.tokens_per_frame = tokens_per_frame
        self.frames: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.num_frames = 0
        self.memos: dict[int, dict[str, torch.Tensor]] = {}  # every memo ever left, by chunk start

    def commit(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        n = self.tokens_per_frame
        for i in range(keys[0].shape[1] // n):
            rows = slice(i * n, (i + 1) * n)
            self.frames[start + i] = ([k[:, rows].clone() for k in keys], [v[:, rows].clone() for v in values])
        self.num_frames = start + keys[0].shape[1] // n

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        n = self.tokens_per_frame
        for i in range(keys.shape[1] // n):
            rows = slice(i * n, (i + 1) * n)
            stored_keys, stored_values = self.frames.setdefault(start + i, ([], []))
            del stored_keys[layer:], stored_values[layer:]
            stored_keys.append(keys[:, rows].clone())
            stored_values.append(values[:, rows].clone())

    def advance(self, end: int) -> None:
        self.num_frames = end

    def layer0_keys(self, frame: int) -> torch.Tensor:
        return self.frames[frame][0][0]  # [B, T, H, D]

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        out = []
        for b in range(self.batch):
            tokens = torch.cat([self.layer0_keys(int(f))[b] for f in frames[b]], dim=0)  # [n*T, H, D]
            out.append(torch.nn.functional.normalize(tokens.float().mean(dim=(0, 1)), dim=-1))
        return torch.stack(out)

    def token_scores(self, frames: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        """Per token of each frame: sum over heads of (sum of the probe frames' keys) . key / (sqrt(D) H)."""
        out = []
        for b in range(self.batch):
            query = torch.cat([self.layer0_keys(int(f))[b] for f in probe[b]]).float().sum(0)  # [H, D]
            rows = []
            for f in frames[b].tolist():
                keys = self.layer0_keys(f)[b].float()  # [T, H, D]
                rows.append((keys * query).sum(dim=(1, 2)) / (query.shape[1] ** 0.5 * query.shape[0]))
            out.append(torch.stack(rows))
        return torch.stack(out)

    def memo(self, before: int) -> dict[str, torch.Tensor] | None:
        earlier = [start for start in self.memos if start < before]
        return self.memos[max(earlier)] if earlier else None

    def read(self, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        """Every layer's attended keys (rotated per sample by plain cat + rotate) and values, or None."""
        if view.memo is not None:
            self.memos[view.start] = view.memo
        if view.frames.shape[1] == 0:
            return None
        layers = len(next(iter(self.frames.values()))[0])
        keys, values = [], []
        for layer in range(layers):
            ks, vs = [], []
            for b in range(view.batch):
                frames = view.frames[b].tolist()
                k = torch.cat([self.frames[f][0][layer][b] for f in frames], dim=0)[None]
                ks.append(apply_rope(k, rope_factors(view.positions[b], grid_hw, head_dim)[None]))
                vs.append(torch.cat([self.frames[f][1][layer][b] for f in frames], dim=0)[None])
            keys.append(torch.cat(ks))
            values.append(torch.cat(vs))
        keep = None if view.keep_tokens is None else view.keep_tokens.flatten(1)  # [B, N*T]
        return MemoryKV(torch.stack(keys), torch.stack(values), keep)
