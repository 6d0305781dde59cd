"""The causal Wan2.1 DiT: block-causal full-sequence forward and chunk-by-chunk forward against a memory.

Computes exactly what Self-Forcing's `CausalWanModel` computes, with the original Wan state-dict names, so the
public checkpoints load with ``strict=True``. Keys are kept un-rotated (after qk-norm); RoPE is applied at read
time from positions the caller chooses, so any temporal position works and memory frames may be re-indexed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from relaxforcing.devices import upload
from relaxforcing.model.attention import attention, check_backend
from relaxforcing.model.config import WanConfig
from relaxforcing.model.graphs import ForwardGraphs
from relaxforcing.model.rope import apply_rope, rope_factors, rotation_dtype

KVCapture = Callable[[int, torch.Tensor, torch.Tensor], None]
"""Receives ``(layer, k, v)`` with un-roped ``[B, L, H, D]`` keys and values of the current tokens."""
CrossKV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per-layer cross-attention keys/values of the text context (:meth:`CausalWanModel.encode_context`)."""


@dataclass
class MemoryKV:
    """The keys/values a chunk attends to before its own tokens, for every layer, already rotated to their
    positions. It enters each block as tensors (``keys[layer]``), so a compiled block sees no Python lookups."""

    keys: torch.Tensor
    """``[L, B, Lm, H, D]`` keys, rotated to their positions unless :attr:`rope` is given."""
    values: torch.Tensor
    """``[L, B, Lm, H, D]``."""
    keep: torch.Tensor | None = None
    """``[B, Lm]`` bool token-level retention (None = every token)."""
    rope: torch.Tensor | None = None
    """``[B or 1, Lm, 2, D]``: the keys are stored un-rotated; each block rotates them by these factors as it
    attends them (fused with the copy that joins them to the chunk's own keys), so no rotated copy is kept."""


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    """Wan's timestep sinusoid, cos first, computed in float64. ``[N]`` -> ``[N, dim]``."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=position.device) / half)
    angles = torch.outer(position.to(torch.float64), freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32, then scaled by a learned weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (Wan's `WanLayerNorm`), affine weights included when the model is bf16."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


@dataclass
class SelfAttentionInputs:
    """Everything self-attention needs besides a block's own tokens; shared by all blocks of one forward."""

    rope: torch.Tensor
    """``[B or 1, Lq, 2, D]`` (cos, signed sin) rotation of the current tokens (``rope_factors``)."""
    memory: MemoryKV | None = None
    """Cached keys/values attended before the current tokens (incremental path)."""
    mask: torch.Tensor | None = None
    """``[B or 1, 1, Lq, Lk]`` bool attention mask over [memory | current] keys; None = attend to all."""
    capture_kv: KVCapture | None = None
    """Called with each layer's un-roped current keys and values (used to commit a chunk to memory)."""


class SelfAttention(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps)
        self.norm_k = RMSNorm(cfg.dim, cfg.eps)
        self.backend = "auto"  # see CausalWanModel.use_attention

    def forward(
        self,
        x: torch.Tensor,  # [B, Lq, C]
        rope: torch.Tensor,  # [B or 1, Lq, 2, D]
        memory_k: torch.Tensor | None,  # [B, Lm, H, D], rotated unless memory_rope is given
        memory_v: torch.Tensor | None,
        mask: torch.Tensor | None,  # [B or 1, 1, Lq, Lm + Lq]
        memory_rope: torch.Tensor | None = None,  # [B or 1, Lm, 2, D]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention output ``[B, Lq, C]`` and this layer's un-roped keys and values ``[B, Lq, H, D]``."""
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))  # [B, Lq, H, D]
        k, v = self.keys_values(x)
        keys, values = apply_rope(k, rope), v
        if memory_k is not None:
            if memory_rope is not None:
                memory_k = apply_rope(memory_k, memory_rope)
            keys, values = torch.cat([memory_k, keys], dim=1), torch.cat([memory_v, values], dim=1)
        return self.o(attention(apply_rope(q, rope), keys, values, mask, self.backend).flatten(2)), k, v

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-roped keys and values ``[B, Lq, H, D]`` of the tokens ``x`` ``[B, Lq, C]``."""
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(x)).unflatten(-1, heads), self.v(x).unflatten(-1, heads)


class CrossAttention(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps)
        self.norm_k = RMSNorm(cfg.dim, cfg.eps)
        self.backend = "auto"  # see CausalWanModel.use_attention

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text keys and values ``[B, Lt, H, D]``; computed once per prompt and reused for every chunk."""
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        return self.o(attention(q, *context_kv, backend=self.backend).flatten(2))


def feed_forward(ffn: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Wan's FFN (``Linear``, tanh GELU, ``Linear``) on ``x`` ``[..., C]``.

    On CUDA without autograd (sampling) the GELU runs in the up-projection's cuBLASLt epilogue
    (``torch._addmm_activation``; inductor keeps it as one call), so the ``[..., ffn_dim]`` activations are written
    once instead of written, read and written again. Elsewhere the modules run as they are: ``_addmm_activation``
    has no backward, and on CPU it applies the erf GELU, not Wan's.
    """
    if not x.is_cuda or torch.is_grad_enabled():
        return ffn(x)
    up, down = ffn[0], ffn[2]
    hidden = torch._addmm_activation(up.bias, x.flatten(0, -2), up.weight.t(), use_gelu=True)
    return down(hidden.unflatten(0, x.shape[:-1]))


class Block(nn.Module):
    """One Wan block with per-frame adaLN modulation."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, cfg.dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(
        self,
        x: torch.Tensor,  # [B, F*T, C]
        e0: torch.Tensor,  # [B, F, 6, C]
        context_kv: tuple[torch.Tensor, torch.Tensor],  # [B, Lt, H, D] each
        rope: torch.Tensor,  # [B or 1, F*T, 2, D]
        memory_k: torch.Tensor | None = None,  # [B, Lm, H, D], rotated unless memory_rope is given
        memory_v: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,  # [B or 1, 1, F*T, Lm + F*T]
        memory_rope: torch.Tensor | None = None,  # [B or 1, Lm, 2, D]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The block's output ``[B, F*T, C]`` and its un-roped self-attention keys and values ``[B, F*T, H, D]``.

        Every input is a tensor, so one compiled graph serves all blocks, every denoising step and the clean pass
        (:meth:`CausalWanModel.compile_blocks`).
        """
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation[:, None] + e0).unbind(2)  # [B, F, C]
        y, k, v = self.self_attn(modulate(self.norm1(x), shift1, scale1), rope, memory_k, memory_v, mask,
                                 memory_rope)
        x = x + gated(y, gate1)
        x = x + self.cross_attn(self.norm3(x), context_kv)
        return x + gated(feed_forward(self.ffn, modulate(self.norm2(x), shift2, scale2)), gate2), k, v

    def keys_values(self, x: torch.Tensor, e0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the block's un-roped self-attention keys and values ``[B, F*T, H, D]`` (``x`` ``[B, F*T, C]``,
        ``e0`` ``[B, F, 6, C]``): all a clean pass needs from the last block."""
        shift1, scale1 = (self.modulation[:, None, :2] + e0[:, :, :2]).unbind(2)  # [B, F, C]
        return self.self_attn.keys_values(modulate(self.norm1(x), shift1, scale1))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` of tokens ``x`` ``[B, F*T, C]`` by per-frame ``[B, F, C]``."""
    frames = shift.shape[1]
    return (x.unflatten(1, (frames, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def gated(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """A branch's output ``y`` ``[B, F*T, C]`` scaled by its per-frame gate ``[B, F, C]``."""
    return (y.unflatten(1, (gate.shape[1], -1)) * gate[:, :, None]).flatten(1, 2)


class Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, F*T, C]``, ``e`` ``[B, F, C]`` (un-projected time embedding) -> ``[B, F*T, p*out]``."""
        shift, scale = (self.modulation[:, None] + e[:, :, None]).unbind(2)  # [B, F, C]
        return self.head(modulate(self.norm(x), shift, scale))


def use_inductor_cache() -> None:
    """Keep compiled graphs on disk (``TORCHINDUCTOR_CACHE_DIR``, default ``~/.cache/relaxforcing/inductor``), so a
    second process on the machine starts fast."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relaxforcing" / "inductor"
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))


@dataclass
class CompiledParts:
    """``torch.compile`` wrappers of a model's blocks and head (sharing their parameters; not submodules)."""

    blocks: list[Callable]
    head: Callable
    last_keys_values: Callable
    """The last block's :meth:`Block.keys_values` (a clean pass ends with it)."""


class CausalWanModel(nn.Module):
    """Wan2.1 text-to-video DiT run autoregressively over chunks of ``cfg.chunk_frames`` latent frames.

    Public paths:
      - ``forward(x, t, context)``: full sequence, block-causal over chunks (training / reference);
      - ``encode_context(context)`` + ``forward_chunk(...)``: one chunk against a memory of cached frames.
    """

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.config = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self._compiled: CompiledParts | None = None
        self._graphs: ForwardGraphs | None = None

    # ---- compilation -------------------------------------------------------------------------------------------

    def compile_blocks(self, cuda_graphs: bool = True) -> None:
        """Compile the blocks and the head with ``torch.compile(fullgraph=True, dynamic=False)`` for the calls that
        ask for it (``forward_chunk(..., compiled=True)``: the sampler asks at a policy's steady state).

        The blocks share one graph (all layers, every denoising step and the clean pass, whose last block runs only
        its key/value projections, a small graph of its own: they take only tensors), so
        a policy at steady state runs one compiled graph per shape; warm-up chunks, whose memory is still growing,
        run eagerly instead of compiling a graph for each length. Inductor fuses the elementwise work around the
        matmuls and attention (float32 norms and modulation, RoPE in float32, gates, residuals). Compiled graphs
        are cached on disk (``TORCHINDUCTOR_CACHE_DIR``, default ``~/.cache/relaxforcing/inductor``), so a second
        process starts fast.

        With ``cuda_graphs`` (on a CUDA model), a compiled denoising forward is also captured in a CUDA graph and
        replayed (:class:`~relaxforcing.model.graphs.ForwardGraphs`): one launch instead of hundreds; the clean pass,
        which hands its keys/values to the store layer by layer, runs the compiled blocks without a graph.
        """
        use_inductor_cache()
        options = {"fullgraph": True, "dynamic": False}
        self._compiled = CompiledParts([torch.compile(block, **options) for block in self.blocks],
                                       torch.compile(self.head, **options),
                                       torch.compile(self.blocks[-1].keys_values, **options))
        device = self.patch_embedding.weight.device
        self._graphs = ForwardGraphs(self._graphed_forward, device) if cuda_graphs and device.type == "cuda" else None

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def cuda_graphs(self) -> ForwardGraphs | None:
        """The graphs compiled denoising forwards replay (None: compiled forwards run without graphs)."""
        return self._graphs if self.compiled else None

    @property
    def attention_backend(self) -> str:
        """The attention kernel every layer uses (:data:`~relaxforcing.model.attention.BACKENDS`)."""
        return self.blocks[0].self_attn.backend

    def use_attention(self, backend: str) -> None:
        """Run every self- and cross-attention with ``backend`` (a :data:`~relaxforcing.model.attention.BACKENDS`
        name). Compiled blocks compile again for it at their next call (the name is part of what they are traced
        with), and CUDA graphs captured with another backend are dropped."""
        check_backend(backend)
        if backend == self.attention_backend:
            return
        for module in self.modules():
            if isinstance(module, SelfAttention | CrossAttention):
                module.backend = backend
        if self._graphs is not None:
            self._graphs = ForwardGraphs(self._graphed_forward, self._graphs.device)

    def without_graphs(self) -> AbstractContextManager[None]:
        """Inside the ``with`` statement, compiled forwards run without CUDA graphs (to compare)."""
        return self._unset("_graphs")

    def _graphed_forward(self, copied: list[torch.Tensor | None], context_kv: list[tuple[torch.Tensor, torch.Tensor]],
                         in_place: list[torch.Tensor]) -> torch.Tensor:
        """The compiled forward a CUDA graph captures: ``copied`` = (x, t, rope, memory rope or None), ``in_place``
        = (memory keys, memory values)."""
        x, t, rope, memory_rope = copied
        inputs = SelfAttentionInputs(rope=rope, memory=MemoryKV(*in_place, rope=memory_rope))
        return self._run(x, t, context_kv, inputs, compiled=True)

    def eager(self) -> AbstractContextManager[None]:
        """Inside the ``with`` statement, calls that ask for the compiled parts run eagerly (to compare the paths)."""
        return self._unset("_compiled")

    @contextmanager
    def _unset(self, name: str) -> Iterator[None]:
        """The attribute ``name`` is None inside the ``with`` statement and restored after it."""
        kept = getattr(self, name)
        setattr(self, name, None)
        try:
            yield
        finally:
            setattr(self, name, kept)

    # ---- shared pieces -------------------------------------------------------------------------------------

    def token_grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        """Token grid (h, w) of one latent frame of spatial size ``latent_hw``."""
        _, ph, pw = self.config.patch_size
        h, w = latent_hw
        if h % ph or w % pw:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch size {ph}x{pw}")
        return h // ph, w // pw

    def check_latents(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is ``[B, in_dim, F, H, W]`` and ``t`` is ``[B, F]``."""
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(f"latents must be [B, {cfg.in_dim}, F, H, W], got {list(x.shape)}")
        if t.shape != x.shape[:1] + x.shape[2:3]:
            raise ValueError(f"timesteps must be [B, F] = {[x.shape[0], x.shape[2]]}, got {list(t.shape)}")
        self.token_grid(tuple(x.shape[3:]))

    def encode_context(self, context: torch.Tensor) -> CrossKV:
        """Text context ``[B, L<=text_len, text_dim]`` -> per-layer cross-attention keys/values."""
        cfg = self.config
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim or context.shape[1] > cfg.text_len:
            raise ValueError(f"context must be [B, L<={cfg.text_len}, {cfg.text_dim}], got {list(context.shape)}")
        context = F.pad(context, (0, 0, 0, cfg.text_len - context.shape[1]))
        embedded = self.text_embedding(context.to(self.patch_embedding.weight.dtype))
        return [block.cross_attn.project_context(embedded) for block in self.blocks]

    def _time(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame time embedding ``e`` ``[B, F, C]`` and its 6-way projection ``e0`` ``[B, F, 6, C]``."""
        e = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, t.flatten()).to(dtype))
        e0 = self.time_projection(e).unflatten(1, (6, -1))
        return e.unflatten(0, t.shape), e0.unflatten(0, t.shape)

    def _run(
        self,
        x: torch.Tensor,  # [B, C_in, F, H, W]
        t: torch.Tensor,  # [B, F]
        context_kv: list[tuple[torch.Tensor, torch.Tensor]],
        inputs: SelfAttentionInputs,
        compiled: bool = False,
        output: bool = True,
    ) -> torch.Tensor | None:
        """The flow prediction ``[B, C_out, F, H, W]``; with ``output=False``, None: only ``inputs.capture_kv``
        is wanted, so the last block stops after its keys/values and the head does not run."""
        parts = self._compiled if compiled and self.compiled else None
        blocks, head = (parts.blocks, parts.head) if parts else (self.blocks, self.head)
        # 1. Patch embedding: tokens in (frame, row, column) order.
        tokens = self.patch_embedding(x.to(self.patch_embedding.weight.dtype))
        grid = tokens.shape[2:]
        # [B, F*h*w, C], token-major in memory: the transposed view would make every block (whose output keeps
        # its input's layout) normalise and add along strided channels
        tokens = tokens.flatten(2).transpose(1, 2).contiguous()
        # 2. Per-frame timestep modulation.
        e, e0 = self._time(t, tokens.dtype)
        # 3. Blocks: the memory enters each as tensors; keys/values of the current tokens go to capture_kv.
        memory, mask = inputs.memory, inputs.mask
        if memory is not None and memory.keep is not None and mask is None:
            own = memory.keep.new_ones(memory.keep.shape[0], tokens.shape[1])
            mask = torch.cat([memory.keep, own], dim=1)[:, None, None, :]  # [B, 1, 1, Lm + Lq]
        memory_rope = None if memory is None else memory.rope
        for layer, block in enumerate(blocks if output else blocks[:-1]):
            memory_kv = (memory.keys[layer], memory.values[layer]) if memory is not None else (None, None)
            tokens, k, v = block(tokens, e0, context_kv[layer], inputs.rope, *memory_kv, mask, memory_rope)
            if inputs.capture_kv is not None:
                inputs.capture_kv(layer, k, v)
        if not output:
            last_keys_values = parts.last_keys_values if parts else self.blocks[-1].keys_values
            inputs.capture_kv(len(blocks) - 1, *last_keys_values(tokens, e0))
            return None
        # 4. Head and unpatchify.
        return self._unpatchify(head(tokens, e), grid)

    def _unpatchify(self, tokens: torch.Tensor, grid: torch.Size) -> torch.Tensor:
        """``[B, F*h*w, p_f*p_h*p_w*C]`` -> ``[B, C, F*p_f, h*p_h, w*p_w]``."""
        f, h, w = grid
        pf, ph, pw = self.config.patch_size
        u = tokens.reshape(tokens.shape[0], f, h, w, pf, ph, pw, self.config.out_dim)
        u = torch.einsum("bfhwpqrc->bcfphqwr", u)
        return u.reshape(tokens.shape[0], self.config.out_dim, f * pf, h * ph, w * pw)

    # ---- public paths --------------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        window_frames: int | None = None,
    ) -> torch.Tensor:
        """Block-causal forward over a whole latent video.

        Args:
            x: ``[B, C_in, F, H, W]`` noisy latents, F divisible by ``chunk_frames``.
            t: ``[B, F]`` per-frame timesteps in [0, 1000].
            context: ``[B, L, text_dim]`` text embeddings.
            window_frames: if set, chunk i sees only frames >= end_of_chunk_i - window_frames (local attention).

        Returns:
            ``[B, C_out, F, H, W]`` flow prediction. Chunk i attends to chunks <= i, bidirectionally within i.
        """
        self.check_latents(x, t)
        frames = x.shape[2]
        chunk = self.config.chunk_frames
        if frames % chunk:
            raise ValueError(f"{frames} latent frames are not divisible by the chunk size {chunk}")
        h, w = self.token_grid(tuple(x.shape[3:]))
        positions = torch.arange(frames, device=x.device)
        rope = rope_factors(positions, (h, w), self.config.head_dim)[None]
        frame_of_token = positions.repeat_interleave(h * w)
        chunk_end = (frame_of_token // chunk + 1) * chunk  # [L] exclusive end frame of each token's chunk
        mask = frame_of_token[None, :] < chunk_end[:, None]
        if window_frames is not None:
            mask &= frame_of_token[None, :] >= chunk_end[:, None] - window_frames
        inputs = SelfAttentionInputs(rope=rope, mask=mask[None, None])
        return self._run(x, t, self.encode_context(context), inputs)

    def forward_teacher_forcing(
        self, clean: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Training path: every noisy chunk attends to the clean chunks before it and to itself.

        The sequence is ``[clean | noisy]`` with both halves at the same temporal positions; clean chunk i sees
        clean chunks <= i, noisy chunk i sees clean chunks < i and noisy chunk i — exactly what the chunk-by-chunk
        sampler shows the model. ``clean``/``noisy`` ``[B, C, F, H, W]``, ``t`` ``[B, F]`` timesteps of the noisy
        half. Returns the flow prediction for the noisy half, ``[B, C_out, F, H, W]``.
        """
        self.check_latents(noisy, t)
        frames, chunk = noisy.shape[2], self.config.chunk_frames
        if frames % chunk:
            raise ValueError(f"{frames} latent frames are not divisible by the chunk size {chunk}")
        h, w = self.token_grid(tuple(noisy.shape[3:]))
        positions = torch.arange(frames, device=noisy.device)
        rope = rope_factors(torch.cat([positions, positions]), (h, w), self.config.head_dim)[None]
        chunk_of = (positions // chunk).repeat_interleave(h * w)
        is_noisy = torch.arange(2, device=noisy.device).repeat_interleave(chunk_of.numel())
        chunk_of = chunk_of.repeat(2)
        q_chunk, k_chunk = chunk_of[:, None], chunk_of[None, :]
        q_noisy, k_noisy = is_noisy[:, None].bool(), is_noisy[None, :].bool()
        sees_clean = ~k_noisy & torch.where(q_noisy, k_chunk < q_chunk, k_chunk <= q_chunk)
        sees_self = q_noisy & k_noisy & (k_chunk == q_chunk)
        inputs = SelfAttentionInputs(rope=rope, mask=(sees_clean | sees_self)[None, None])
        x = torch.cat([clean, noisy], dim=2)
        times = torch.cat([torch.zeros_like(t), t], dim=1)
        return self._run(x, times, self.encode_context(context), inputs)[:, :, frames:]

    def forward_chunk(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context_kv: list[tuple[torch.Tensor, torch.Tensor]],
        query_positions: torch.Tensor,
        memory: MemoryKV | None = None,
        compiled: bool = False,
    ) -> torch.Tensor:
        """Denoise one chunk against a memory of cached frames.

        Args:
            x: ``[B, C_in, f, H, W]`` latents of the chunk; t: ``[B, f]`` timesteps.
            context_kv: from :meth:`encode_context`.
            query_positions: ``[f]`` or ``[B, f]`` temporal RoPE positions of the chunk's frames.
            memory: keys/values of the attended cached frames (rotated by the memory itself), or None.
            compiled: run the blocks compiled by :meth:`compile_blocks` (if they are; replayed from a CUDA graph
                when the model has them); for shapes that recur.

        Returns:
            ``[B, C_out, f, H, W]`` flow prediction.
        """
        rope = self._chunk_rope(x, t, query_positions)
        graphs = self.cuda_graphs if compiled else None
        if graphs is not None and memory is not None and memory.keep is None:
            return graphs([x, t, rope, memory.rope], context_kv, [memory.keys, memory.values])
        return self._run(x, t, context_kv, SelfAttentionInputs(rope=rope, memory=memory), compiled)

    def encode_chunk(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context_kv: list[tuple[torch.Tensor, torch.Tensor]],
        query_positions: torch.Tensor,
        capture_kv: KVCapture,
        memory: MemoryKV | None = None,
        compiled: bool = False,
    ) -> None:
        """A chunk's clean pass: hand each layer's un-roped keys and values of the chunk's tokens to
        ``capture_kv``, layer by layer, as :meth:`forward_chunk` computes them (same arguments). Nothing the
        prediction alone needs runs: the last block stops after its key/value projections and the head is skipped.
        """
        inputs = SelfAttentionInputs(rope=self._chunk_rope(x, t, query_positions), memory=memory,
                                     capture_kv=capture_kv)
        self._run(x, t, context_kv, inputs, compiled, output=False)

    def _chunk_rope(self, x: torch.Tensor, t: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        """Check a chunk's latents and timesteps; its tokens' rotation ``[B or 1, f*h*w, 2, D]``."""
        self.check_latents(x, t)
        grid = self.token_grid(tuple(x.shape[3:]))
        positions = query_positions if query_positions.ndim == 2 else query_positions[None]
        dtype = rotation_dtype(self.patch_embedding.weight.dtype)
        return rope_factors(upload(positions, x.device), grid, self.config.head_dim, dtype)
