"""MemoryReader: the keys/values a chunk attends to, gathered from the store and rotated once per chunk into a
workspace that is reused from chunk to chunk."""

from __future__ import annotations

from typing import Protocol

import torch

from relaxforcing.devices import upload
from relaxforcing.memory.view import MemoryView
from relaxforcing.model.rope import apply_rope, rope_factors, rotation_dtype
from relaxforcing.model.wan import MemoryKV


class KVSource(Protocol):
    """Where a reader gathers from (a :class:`~relaxforcing.memory.store.FrameStore`)."""

    k: torch.Tensor
    """The device key buffer ``[L, B, S, T, H, D]``: its layer count, device and dtype are the reader's."""

    def locate(self, frames: torch.Tensor) -> torch.Tensor:
        """Device slots ``[B, N]`` (on the host) of ``frames`` ``[B, N]``, bringing frames onto the device if
        needed."""
        ...

    v: torch.Tensor
    """The device value buffer, same layout as :attr:`k`."""

    def gather(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at device ``slots`` ``[B, N]`` (on the device) for one layer, as ``[B, N*T, H, D]``."""
        ...


class MemoryReader:
    """Fills the model's :class:`~relaxforcing.model.wan.MemoryKV` for one chunk at a time.

    Every denoising step and the clean pass of a chunk attend to the same frames at the same positions, so the
    attended keys are gathered and rotated once per chunk, layer by layer, into one workspace ``[L, B, Lm, H, D]``
    for keys and one for values. The workspace is kept while the attended length stays the same (every chunk at a
    policy's steady state), so no copy of the attended cache is allocated per chunk; a :class:`MemoryKV` is valid
    until the next :meth:`read`. The reader holds no reference to its store (a store owns its reader).
    """

    def __init__(self) -> None:
        self._keys: torch.Tensor | None = None  # [L, B, Lm, H, D]
        self._values: torch.Tensor | None = None

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self._keys, self._values) if t is not None)

    def read(self, store: KVSource, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        """The rotated keys and values of ``view``'s frames at ``view``'s positions (None when it has no frames)."""
        if view.frames.shape[1] == 0:
            return None
        source = store.k
        slots = store.locate(view.frames)  # [B, N] on the host
        rope = rope_factors(upload(view.positions, source.device), grid_hw, head_dim,
                            rotation_dtype(source.dtype))  # [B, N*T, 2, D]
        layers, batch, stored, tokens, heads, dim = source.shape
        shape = (layers, batch, view.frames.shape[1] * tokens, heads, dim)
        # A view that reads every device slot in order (relax offloaded: sinks | history | tail) attends the store's
        # values as they lie; keys are always rotated into the workspace.
        in_place = bool((slots == torch.arange(stored)).all()) if slots.shape[1] == stored else False
        if self._keys is None or self._keys.shape != shape or (self._values is None) != in_place:
            self._keys = self._values = None  # free the old workspace before taking the new one
            self._keys = torch.empty(shape, dtype=source.dtype, device=source.device)
            if not in_place:
                self._values = torch.empty(shape, dtype=source.dtype, device=source.device)
        device_slots = upload(slots, source.device)
        for layer in range(layers):
            k, v = store.gather(layer, device_slots)
            self._keys[layer].copy_(apply_rope(k, rope))
            if not in_place:
                self._values[layer].copy_(v)
        values = store.v.flatten(2, 3) if in_place else self._values
        keep = None if view.keep_tokens is None else upload(view.keep_tokens.flatten(1), source.device)
        return MemoryKV(self._keys, values, keep)
