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


class NaiveMemRoPE(NaiveStore):
    """MemRoPE's cache kept as the authors' code keeps it (YoungRaeKimm/MemRoPE ``causal_model.py``), independent of
    the frame store: per layer one ``[B, window*T, H, D]`` buffer of un-roped keys and one of values, filled in order;
    once a chunk would overflow it, the f frames after the two EMA slots are pooled into both slots (set the first
    time, then ``alpha * pooled + (1 - alpha) * slot``), the rest shift down and the chunk goes at the end. Reads
    attend the buffer before the chunk at positions ``0..``; the policy's view is used only for its query positions,
    checked against the buffer's."""

    def __init__(self, batch: int, tokens_per_frame: int, sink: int = 3, window: int = 12, alpha_long: float = 0.01,
                 alpha_short: float = 0.1, adaptive: bool = False, chunk: int = 3):
        super().__init__(batch, tokens_per_frame)
        self.sink, self.window, self.chunk = sink, window, chunk
        self.alpha_long, self.alpha_short, self.adaptive = alpha_long, alpha_short, adaptive
        self.k: list[torch.Tensor] = []  # per layer [B, window*T, H, D]
        self.v: list[torch.Tensor] = []
        self.local_end = 0  # tokens filled
        self.local_start = 0  # where the chunk being made goes
        self.ema_initialized = False

    def read(self, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        n, f = self.tokens_per_frame, self.chunk
        new = f * n
        self.local_start = self.local_end
        if self.local_end + new > self.window * n:  # rolling
            evicted = new + self.local_end - self.window * n
            recent_start = (self.sink + 2) * n  # after the long and short EMA slots
            for k, v in zip(self.k, self.v, strict=True):
                self.roll(k, v, recent_start, evicted)
            self.ema_initialized = True
            self.local_start = self.local_end - evicted
        first = self.local_start // n
        assert view.query_positions.tolist() == list(range(first, first + f))
        if first == 0:
            return None
        positions = torch.arange(first)
        keys = torch.stack([apply_rope(k[:, :self.local_start], rope_factors(positions, grid_hw, head_dim)[None])
                            for k in self.k])
        values = torch.stack([v[:, :self.local_start] for v in self.v])
        return MemoryKV(keys, values)

    def roll(self, k: torch.Tensor, v: torch.Tensor, recent_start: int, evicted: int) -> None:
        """One layer: pool the evicted tokens into the EMA slots and shift the recent tokens down (in place)."""
        n = self.tokens_per_frame
        long, short = slice(self.sink * n, (self.sink + 1) * n), slice((self.sink + 1) * n, (self.sink + 2) * n)
        evicted_k, evicted_v = k[:, recent_start:recent_start + evicted], v[:, recent_start:recent_start + evicted]
        if self.adaptive:
            b, _, h, d = k.shape
            mean_k = evicted_k.view(b, evicted // n, n, h, d).mean(dim=1)
            mean_v = evicted_v.view(b, evicted // n, n, h, d).mean(dim=1)
        else:
            mean_k = evicted_k.mean(dim=1, keepdim=True).expand(-1, n, -1, -1)
            mean_v = evicted_v.mean(dim=1, keepdim=True).expand(-1, n, -1, -1)
        if not self.ema_initialized:
            k[:, long], v[:, long], k[:, short], v[:, short] = mean_k, mean_v, mean_k, mean_v
        else:
            alpha_long, alpha_short = self.alpha_long, self.alpha_short
            if self.adaptive:
                motion = (mean_k - k[:, short]).norm(dim=-1).mean(dim=-1)  # [B, T]
                motion = motion / (motion.max(dim=-1, keepdim=True).values + 1e-8)
                low, high = self.alpha_short * 0.1, self.alpha_short * 5.0
                alpha_short = (low + motion * (high - low)).unsqueeze(-1).unsqueeze(-1)
            old_long_k, old_long_v = k[:, long].clone(), v[:, long].clone()
            old_short_k, old_short_v = k[:, short].clone(), v[:, short].clone()
            k[:, long] = alpha_long * mean_k + (1 - alpha_long) * old_long_k
            v[:, long] = alpha_long * mean_v + (1 - alpha_long) * old_long_v
            k[:, short] = alpha_short * mean_k + (1 - alpha_short) * old_short_k
            v[:, short] = alpha_short * mean_v + (1 - alpha_short) * old_short_v
        kept = self.local_end - recent_start - evicted
        k[:, recent_start:recent_start + kept] = k[:, recent_start + evicted:self.local_end].clone()
        v[:, recent_start:recent_start + kept] = v[:, recent_start + evicted:self.local_end].clone()

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        if layer == len(self.k):
            b, _, h, d = keys.shape
            self.k.append(keys.new_zeros(b, self.window * self.tokens_per_frame, h, d))
            self.v.append(values.new_zeros(b, self.window * self.tokens_per_frame, h, d))
        end = self.local_start + keys.shape[1]
        self.k[layer][:, self.local_start:end] = keys
        self.v[layer][:, self.local_start:end] = values

    def advance(self, end: int) -> None:
        self.num_frames = end
        self.local_end = self.local_start + self.chunk * self.tokens_per_frame
