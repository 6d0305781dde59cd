"""StreamSession: a stream driven one chunk at a time whose prompt can be switched at chunk boundaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from relaxforcing.memory.store import FrameStore
from relaxforcing.memory.view import MemoryView
from relaxforcing.sampling.stream import Chunk, StreamSampler

if TYPE_CHECKING:
    from relaxforcing.pipeline import VideoPipeline

DEFAULT_RECACHE_FRAMES = 12
"""Latent frames re-encoded after a prompt switch (LongLive's local attention window, 12 latent frames)."""


class StreamSession:
    """One batch of videos generated chunk by chunk; owns its frame store, cross-attention K/V and generators.

    Until a prompt switch, chunk i equals chunk i of :meth:`StreamSampler.stream` for the same context and seeds
    (the same ``denoise_chunk`` calls in the same order). :meth:`switch_prompt` works LongLive-style at a chunk
    boundary: the new prompt's cross-attention K/V replace the old ones, then the DiT runs once at t = 0 over the
    last ``recache_frames`` committed clean latents with the new context, block-causally (each chunk-aligned group
    attends to the recached frames before it, at their true positions), and their K/V overwrite the store's.
    Frames older than the recache window keep their K/V. The session keeps a ring of the last ``keep_latents``
    clean latent frames for this.

    Args:
        sampler: the model, memory policy and schedule.
        encode_text: prompts -> ``[B, L, text_dim]`` embeddings.
        prompts: one per sample.
        seeds: one per sample; a sample's video depends only on its prompt(s) and seed.
        latent_hw: latent height and width.
        num_frames: latent frames to make (a multiple of the chunk size), or None for an endless stream.
        keep_latents: most latent frames a prompt switch can re-encode.
    """

    def __init__(
        self,
        sampler: StreamSampler,
        encode_text: Callable[[list[str]], torch.Tensor],
        prompts: Sequence[str],
        seeds: Sequence[int],
        latent_hw: tuple[int, int],
        num_frames: int | None = None,
        keep_latents: int = DEFAULT_RECACHE_FRAMES,
    ):
        f = sampler.policy.chunk_frames
        if len(prompts) != len(seeds) or not prompts:
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds must match and be at least one")
        if num_frames is not None and (num_frames <= 0 or num_frames % f):
            raise ValueError(f"num_frames={num_frames} must be a positive multiple of the chunk size {f}")
        if keep_latents < 0:
            raise ValueError(f"keep_latents={keep_latents} must be >= 0")
        self.sampler = sampler
        self.encode_text = encode_text
        self.latent_hw = latent_hw
        self.num_frames = num_frames
        self.keep_latents = keep_latents
        self.prompts = list(prompts)
        self.index = 0
        """Index of the next chunk."""
        context = encode_text(self.prompts)
        with torch.no_grad():
            self.cross_kv = sampler.model.encode_context(context.to(sampler.device))
        self.store: FrameStore = sampler.new_store(len(prompts), latent_hw)
        self.generators = [torch.Generator(sampler.device).manual_seed(int(s)) for s in seeds]
        self._latents: torch.Tensor | None = None  # [B, C, n <= keep_latents, H, W], ends at store.num_frames

    @classmethod
    def from_pipeline(
        cls,
        pipeline: VideoPipeline,
        prompts: Sequence[str],
        seeds: Sequence[int],
        memory: str = "relax",
        num_frames: int | None = None,
        keep_latents: int = DEFAULT_RECACHE_FRAMES,
    ) -> StreamSession:
        """A session on ``pipeline``'s model and text encoder with the memory policy ``memory`` (a spec)."""
        return cls(pipeline.sampler(memory), pipeline.encode_text, prompts, seeds, pipeline.latent_hw, num_frames,
                   keep_latents)

    @property
    def batch(self) -> int:
        return len(self.generators)

    @property
    def committed_frames(self) -> int:
        return self.store.num_frames

    @property
    def done(self) -> bool:
        return self.num_frames is not None and self.index * self.sampler.policy.chunk_frames >= self.num_frames

    def next_chunk(self) -> Chunk:
        """Denoise, commit and return the next chunk; the last chunk of a finite stream is not committed."""
        if self.done:
            raise RuntimeError(f"the stream is finished ({self.num_frames} latent frames made)")
        f = self.sampler.policy.chunk_frames
        last = self.num_frames is not None and (self.index + 1) * f >= self.num_frames
        with torch.no_grad():
            chunk = self.sampler.denoise_chunk(self.store, self.cross_kv, self.generators, self.latent_hw,
                                               self.index, commit=not last)
        if not last and self.keep_latents:
            kept = chunk.latents if self._latents is None else torch.cat([self._latents, chunk.latents], dim=2)
            self._latents = kept[:, :, -self.keep_latents:]
        self.index += 1
        return chunk

    def switch_prompt(self, prompts: str | Sequence[str], recache_frames: int | None = None) -> int:
        """Use ``prompts`` (one, or one per sample) from the next chunk on; returns the frames re-encoded.

        Raises:
            ValueError: the text encoder rejects a prompt, the prompt count is wrong, or ``recache_frames`` is
                outside ``0..keep_latents``; nothing has changed then.
        """
        prompts = [prompts] * self.batch if isinstance(prompts, str) else list(prompts)
        if len(prompts) != self.batch:
            raise ValueError(f"{len(prompts)} prompts for a batch of {self.batch}")
        recached = self.switch_context(self.encode_text(prompts), recache_frames)
        self.prompts = prompts
        return recached

    def switch_context(self, context: torch.Tensor, recache_frames: int | None = None) -> int:
        """:meth:`switch_prompt` for text embeddings ``[B, L, text_dim]``; returns the frames re-encoded."""
        n = self.keep_latents if recache_frames is None else recache_frames
        if not 0 <= n <= self.keep_latents:
            raise ValueError(f"recache_frames={n} must be in 0..{self.keep_latents} (the session's keep_latents)")
        if self.done:
            raise RuntimeError("the stream is finished; there is no next chunk to switch the prompt for")
        if context.shape[0] != self.batch:
            raise ValueError(f"context for {context.shape[0]} samples, the session has {self.batch}")
        with torch.no_grad():
            cross_kv = self.sampler.model.encode_context(context.to(self.sampler.device))
            recached = self._recache(cross_kv, n)
        self.cross_kv = cross_kv
        return recached

    def _recache(self, cross_kv: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> int:
        """Re-encode the last ``n`` (at most those kept and still held) committed frames under ``cross_kv``."""
        end = self.store.num_frames
        kept = 0 if self._latents is None else self._latents.shape[2]
        first = end
        while first > end - min(n, kept) and self.store.holds(first - 1):
            first -= 1
        if first == end:
            return 0
        f = self.sampler.policy.chunk_frames
        bounds = [first, *range((first // f + 1) * f, end, f), end]  # groups on the chunk grid
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            keys, values = self._encode_frames(self._latents[:, :, kept - (end - s): kept - (end - e)], s,
                                               list(range(first, s)), cross_kv)
            self.store.rewrite(s, keys, values)
        return end - first

    def _encode_frames(
        self, x: torch.Tensor, start: int, earlier: list[int], cross_kv: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer K/V ``[B, n*T, H, D]`` of clean latents ``x`` ``[B, C, n, H, W]`` (frames ``start..``) at
        t = 0, attending to the stored ``earlier`` frames at their own positions."""
        model = self.sampler.model
        memory = None
        if earlier:
            view = MemoryView.shared(start, self.batch, earlier, earlier, ["window"] * len(earlier),
                                     range(start, start + x.shape[2]))
            memory = self.store.reader(view, model.token_grid(self.latent_hw), model.config.head_dim)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        t = torch.zeros(self.batch, x.shape[2], device=self.sampler.device)
        model.forward_chunk(x, t, cross_kv, torch.arange(start, start + x.shape[2]), memory=memory,
                            kv_sink=lambda layer, k, v: (keys.append(k), values.append(v)))
        return keys, values
