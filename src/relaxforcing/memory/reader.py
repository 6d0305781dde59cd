"""MemoryReader: the keys/values a chunk attends to, gathered from the store and rotated once per chunk."""

from __future__ import annotations

from typing import Protocol

import torch

from relaxforcing.memory.view import MemoryView
from relaxforcing.model.rope import apply_rope, rope_factors, rotation_dtype


class KVSource(Protocol):
    """Where a reader gathers from (a :class:`~relaxforcing.memory.store.FrameStore`)."""

    k: torch.Tensor
    """The key buffer: its device and dtype are the reader's."""

    def gather(self, layer: int, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``frames`` ``[B, N]`` for one layer, as ``[B, N*T, H, D]``."""
        ...


class MemoryReader:
    """Implements the model's ``MemoryKV`` for one chunk.

    Every denoising step and the clean pass of a chunk attend to the same frames at the same positions, so each
    layer's gathered, rotated keys are computed on first use and reused for the rest of the chunk.
    """

    def __init__(self, store: KVSource, view: MemoryView, grid_hw: tuple[int, int], head_dim: int):
        self.store = store
        self.frames = view.frames
        device = store.k.device
        dtype = rotation_dtype(store.k.dtype)
        self.rope = rope_factors(view.positions.to(device), grid_hw, head_dim, dtype)  # [B, N*T, D/2]
        self.keep = None if view.keep_tokens is None else view.keep_tokens.flatten(1).to(device)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if layer not in self._cache:
            k, v = self.store.gather(layer, self.frames)
            self._cache[layer] = (apply_rope(k, self.rope), v)
        return (*self._cache[layer], self.keep)
