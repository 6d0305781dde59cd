"""What a memory policy decides for one chunk: which cached frames to attend and at which RoPE positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

ROLES = ("sink", "history", "tail", "window", "ema_long", "ema_short", "current")

FoldRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``rule(k, v, frame_keys, frame_values) -> (k, v)``: a synthesised frame's keys/values ``[B, T, H, D]`` of one layer
after folding in stored frames ``[B, n, T, H, D]`` (pure tensor maths, in the store's dtype)."""


@dataclass(frozen=True)
class Fold:
    """Stored frames folded into one of the store's synthesised frames (e.g. MemRoPE's EMA slots) when the view is
    read, before its keys are gathered; once per chunk, layer by layer."""

    slot: int
    """The synthesised frame updated (``0 .. policy.synthesised_frames-1``), named ``-1-slot`` in ``frames``."""
    frames: torch.Tensor
    """``[B, n]`` long: global index of each stored frame folded in."""
    rule: FoldRule


@dataclass(frozen=True)
class MemoryView:
    """A policy's decision for the chunk starting at frame ``start`` (all tensors on CPU).

    The attended keys are laid out in the order of ``frames`` (then the current chunk), so roles line up with
    columns. Each sample of a batch may attend different frames (e.g. its own history frame).
    """

    start: int
    """Global latent index of the chunk's first frame."""
    frames: torch.Tensor
    """``[B, N]`` long: global latent index of each attended cached frame; a negative index ``-1-s`` names the
    store's synthesised frame ``s`` (a summary of other frames, see :class:`Fold`)."""
    positions: torch.Tensor
    """``[B, N]`` long: temporal RoPE position of each attended cached frame."""
    roles: tuple[str, ...]
    """``N`` roles (sink | history | tail | window | ema_long | ema_short), shared by all samples."""
    query_positions: torch.Tensor
    """``[f]`` long: temporal RoPE positions of the chunk's own frames."""
    keep_tokens: torch.Tensor | None = None
    """``[B, N, T]`` bool: token-level retention inside attended frames (None = every token)."""
    candidates: tuple[tuple[tuple[int, float], ...], ...] | None = None
    """Per sample, ``(frame, score)`` of each scored candidate (trace only)."""
    memo: dict[str, torch.Tensor] | None = None
    """State the policy leaves for its later chunks (e.g. which tokens a compression kept); the store keeps it
    when it reads this view and hands it back through ``StoreView.memo``. CPU tensors; a tensor named ``frames``
    holds global frame indices."""
    folds: tuple[Fold, ...] = ()
    """Frames to fold into the store's synthesised frames before this view's keys are gathered."""

    def __post_init__(self) -> None:
        if self.frames.shape != self.positions.shape or self.frames.ndim != 2:
            raise ValueError(f"frames {list(self.frames.shape)} and positions {list(self.positions.shape)} "
                             "must both be [B, N]")
        if len(self.roles) != self.frames.shape[1]:
            raise ValueError(f"{len(self.roles)} roles for {self.frames.shape[1]} attended frames")
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise ValueError(f"unknown roles {bad}; expected one of {ROLES}")
        keep = self.keep_tokens
        if keep is not None and (keep.ndim != 3 or keep.shape[:2] != self.frames.shape):
            raise ValueError(f"keep_tokens {list(self.keep_tokens.shape)} must be [B, N, T] over frames "
                             f"{list(self.frames.shape)}")
        for fold in self.folds:
            if fold.slot < 0 or fold.frames.ndim != 2 or fold.frames.shape[0] != self.batch:
                raise ValueError(f"a fold into synthesised frame {fold.slot} of frames {list(fold.frames.shape)}: "
                                 f"need slot >= 0 and [B={self.batch}, n] frames")

    @classmethod
    def shared(
        cls,
        start: int,
        batch: int,
        frames: Sequence[int],
        positions: Sequence[int],
        roles: Sequence[str],
        query_positions: Sequence[int],
    ) -> MemoryView:
        """A view in which every sample attends the same frames at the same positions."""
        as_rows = lambda values: torch.tensor(list(values), dtype=torch.long).reshape(1, -1).repeat(batch, 1)  # noqa: E731
        return cls(start=start, frames=as_rows(frames), positions=as_rows(positions), roles=tuple(roles),
                   query_positions=torch.tensor(list(query_positions), dtype=torch.long))

    @property
    def batch(self) -> int:
        return self.frames.shape[0]

    def trace_records(self, chunk: int, policy: str) -> list[dict]:
        """One JSON-ready record per sample: every attended frame (current chunk included) with role and position; a
        synthesised frame (negative index) also lists the frames this chunk folded into it."""
        records = []
        for b in range(self.batch):
            attended = [
                {"frame": int(f), "role": role, "position": int(p)}
                for f, p, role in zip(self.frames[b].tolist(), self.positions[b].tolist(), self.roles, strict=True)
            ]
            for entry in attended:
                folded = [f for fold in self.folds if -1 - fold.slot == entry["frame"] for f in fold.frames[b].tolist()]
                if folded:
                    entry["folded"] = folded
            if self.keep_tokens is not None:  # token-level retention: how many tokens of each frame are attended
                for entry, kept in zip(attended, self.keep_tokens[b].sum(-1).tolist(), strict=True):
                    entry["tokens"] = int(kept)
            attended += [
                {"frame": self.start + i, "role": "current", "position": int(p)}
                for i, p in enumerate(self.query_positions.tolist())
            ]
            record = {"chunk": chunk, "start": self.start, "sample": b, "policy": policy, "attended": attended}
            if self.candidates is not None:
                record["candidates"] = [{"frame": f, "score": s} for f, s in self.candidates[b]]
            records.append(record)
        return records
