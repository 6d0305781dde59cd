"""Classifier-free guidance in one forward: the conditional and the unconditional prediction as one batch."""

from __future__ import annotations

import torch

from relaxforcing.model.wan import CausalWanModel, CrossKV, MemoryKV


class GuidedForward:
    """``uncond + scale * (cond - uncond)`` from one forward of batch ``2B``: rows ``:B`` read the prompt's
    cross-attention keys/values, rows ``B:`` the empty context's, and both halves attend the same memory.

    One forward of twice the batch costs less than two forwards (one call's overhead, larger matrix products). The
    paired memory and context live in buffers reused from chunk to chunk, so a compiled model replays its CUDA graph
    at fixed addresses; the memory is copied once per chunk, the context once per prompt.
    """

    def __init__(self, scale: float):
        self.scale = scale
        self._memory: dict[str, torch.Tensor] = {}  # field -> [mem; mem] buffer
        self._context: tuple[torch.Tensor, CrossKV] | None = None  # (the prompt's first key tensor, paired context)

    def pair_memory(self, memory: MemoryKV | None) -> MemoryKV | None:
        """``memory`` with its batch repeated twice (keys/values ``[L, 2B, Lm, H, D]``); batch-free RoPE kept."""
        if memory is None:
            return None
        keys = self._paired("keys", memory.keys, dim=1)
        values = self._paired("values", memory.values, dim=1)
        keep = None if memory.keep is None else self._paired("keep", memory.keep, dim=0)
        rope = memory.rope
        if rope is not None and rope.shape[0] > 1:
            rope = self._paired("rope", rope, dim=0)
        return MemoryKV(keys=keys, values=values, keep=keep, rope=rope)

    def pair_context(self, cond_kv: CrossKV, uncond_kv: CrossKV) -> CrossKV:
        """Per layer ``[cond; uncond]`` keys/values ``[2B, Lt, H, D]``, made again only when the prompt changes."""
        if self._context is None or self._context[0] is not cond_kv[0][0]:
            paired = [(torch.cat([ck, uk]), torch.cat([cv, uv]))
                      for (ck, cv), (uk, uv) in zip(cond_kv, uncond_kv, strict=True)]
            self._context = (cond_kv[0][0], paired)
        return self._context[1]

    def flow(self, model: CausalWanModel, x: torch.Tensor, t: torch.Tensor, context: CrossKV,
             query_positions: torch.Tensor, memory: MemoryKV | None, compiled: bool) -> torch.Tensor:
        """The guided flow ``[B, C, f, h, w]`` for latents ``x`` ``[B, C, f, h, w]`` and timesteps ``t`` ``[B, f]``,
        with ``context`` and ``memory`` from :meth:`pair_context` and :meth:`pair_memory`."""
        positions = query_positions if query_positions.ndim == 1 else query_positions.repeat(2, 1)
        both = model.forward_chunk(torch.cat([x, x]), torch.cat([t, t]), context, positions, memory=memory,
                                   compiled=compiled)
        cond, uncond = both.chunk(2)
        return torch.lerp(uncond, cond, self.scale)

    def _paired(self, name: str, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(tensor.shape)
        shape[dim] *= 2
        buffer = self._memory.get(name)
        if buffer is None or list(buffer.shape) != shape or buffer.dtype != tensor.dtype or (
                buffer.device != tensor.device):
            buffer = self._memory[name] = tensor.new_empty(shape)
        half = tensor.shape[dim]
        buffer.narrow(dim, 0, half).copy_(tensor)
        buffer.narrow(dim, half, half).copy_(tensor)
        return buffer
