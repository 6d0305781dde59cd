"""MemoryReader: the keys/values a chunk attends to, gathered from the store and rotated once per chunk into a
workspace that is reused from chunk to chunk."""

from __future__ import annotations

import math
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

    keys_rotated: bool
    """Keys are stored rotated at their frames' own positions (a view's positions must then be its frames)."""

    def slot(self, frame: int) -> int:
        """The frame's slot in the store's canonical layout (the order rotated keys are attended in)."""
        ...

    def gather(self, layer: int, slots: torch.Tensor, tokens: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at device ``slots`` ``[B, N]`` (on the device) for one layer, as ``[B, N*T, H, D]``; with
        ``tokens`` ``[B, K]``, only token ``tokens[b, i]`` of slot ``slots[b, i]``: ``[B, K, H, D]``."""
        ...


class MemoryReader:
    """Fills the model's :class:`~relaxforcing.model.wan.MemoryKV` for one chunk at a time.

    When the attended frames are the store's first slots, in order (relax offloaded: sinks | history | tail; the
    whole ring of a policy whose keys are stored rotated), the memory is the store itself: nothing is copied, and
    un-rotated keys come with their RoPE factors for the blocks to rotate as they read them. Otherwise every
    denoising step and the clean pass of a chunk attend the same frames at the same positions, so the attended keys
    are gathered and rotated once per chunk, layer by layer, into one workspace ``[L, B, Lm, H, D]`` for keys and
    one for values. The workspace is kept, at one address, while the attended length stays about the same (every
    chunk at a policy's steady state), so no copy of the attended cache is allocated per chunk and a CUDA graph of
    the forward reads it in place; a :class:`MemoryKV` is valid until the next :meth:`read`. The reader holds no
    reference to its store (a store owns its reader).
    """

    def __init__(self) -> None:
        self._keys: torch.Tensor | None = None  # flat storage of the rotated keys [L, B, Lm, H, D]
        self._values: torch.Tensor | None = None  # and of the values

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self._keys, self._values) if t is not None)

    def _workspace(self, shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values workspace of ``shape``. Storage is kept while a read needs between 3/4 of it and all of
        it, so lengths that alternate (a policy whose memory changes from chunk to chunk) keep one address and a
        longer warm-up does not pin its size for the whole stream."""
        need = math.prod(shape)
        held = 0 if self._keys is None else self._keys.numel()
        if not 0.75 * held <= need <= held:
            self._keys = self._values = None  # free the old workspace before taking the new one
            self._keys = torch.empty(need, dtype=like.dtype, device=like.device)
            self._values = torch.empty(need, dtype=like.dtype, device=like.device)
        return self._keys[:need].view(shape), self._values[:need].view(shape)

    def read(self, store: KVSource, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        """The rotated keys and values of ``view``'s frames at ``view``'s positions (None when it has no frames).

        A view that keeps only some tokens of its frames (``keep_tokens``) gets only those gathered, in frame order,
        when every sample keeps as many; otherwise every token is gathered and the rest are masked out.
        """
        if view.frames.shape[1] == 0:
            return None
        if store.keys_rotated and (view.keep_tokens is not None or not torch.equal(view.positions, view.frames)):
            raise ValueError("this store keeps keys rotated at their own frames' positions; the view moves or masks "
                             "them")
        source = store.k
        frames = view.frames
        if store.keys_rotated:  # keys carry their positions: attend them in the store's slot order, wherever they lie
            canonical = torch.tensor([[store.slot(f) for f in row] for row in frames.tolist()]).reshape(frames.shape)
            frames = frames.gather(1, canonical.argsort(dim=1))
        slots = store.locate(frames)  # [B, N] on the host
        layers, batch, stored, tokens, heads, dim = source.shape
        rope = None if store.keys_rotated else rope_factors(
            upload(view.positions, source.device), grid_hw, head_dim, rotation_dtype(source.dtype))  # [B, N*T, 2, D]
        picked = kept_tokens(view.keep_tokens)  # [B, K] flat (frame column * T + token) indices, or None
        keep = None
        if picked is None and view.keep_tokens is not None:
            keep = upload(view.keep_tokens.flatten(1), source.device)
        if picked is None and leading(slots):
            # The store's first slots are the memory (relax offloaded: sinks | history | tail; an absolute-position
            # policy's whole ring): it is attended where it lies, each block rotating un-rotated keys as it reads them.
            self._keys = self._values = None
            n = slots.shape[1]
            return MemoryKV(source[:, :, :n].flatten(2, 3), store.v[:, :, :n].flatten(2, 3), keep, rope)
        length = view.frames.shape[1] * tokens if picked is None else picked.shape[1]
        workspace_keys, workspace_values = self._workspace((layers, batch, length, heads, dim), source)
        token_slots = token_ids = None
        if picked is not None:
            token_slots = upload(slots.gather(1, picked // tokens), source.device)  # [B, K]
            token_ids = upload(picked % tokens, source.device)
            if rope is not None:
                rope = rope.gather(1, upload(picked, source.device)[..., None, None].expand(-1, -1, *rope.shape[2:]))
        device_slots = upload(slots, source.device)
        for layer in range(layers):
            if picked is None:
                k, v = store.gather(layer, device_slots)
            else:
                k, v = store.gather(layer, token_slots, token_ids)
            workspace_keys[layer].copy_(k if rope is None else apply_rope(k, rope))
            workspace_values[layer].copy_(v)
        return MemoryKV(workspace_keys, workspace_values, keep)


def leading(slots: torch.Tensor) -> bool:
    """Every sample reads the store's first ``N`` slots in order (``slots`` ``[B, N]``)."""
    return bool((slots == torch.arange(slots.shape[1])).all())


def kept_tokens(keep: torch.Tensor | None) -> torch.Tensor | None:
    """``[B, K]`` flat indices (frame column * T + token) of the tokens ``keep`` ``[B, N, T]`` retains, in order,
    when every sample retains the same number ``K``; None when there is no mask or the counts differ."""
    if keep is None:
        return None
    flat = keep.flatten(1)  # [B, N*T]
    counts = flat.sum(1)
    if not bool((counts == counts[0]).all()):
        return None
    return flat.nonzero()[:, 1].reshape(flat.shape[0], -1)
