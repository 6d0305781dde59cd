"""StreamSession: the one chunk driver. Every loop that makes video (generate, sweep, viewer, bench, toy report)
pulls chunks from a session."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from relaxforcing.memory.store import FrameStore
from relaxforcing.memory.view import MemoryView
from relaxforcing.sampling.sampler import Chunk, ChunkSampler, CrossKV

DEFAULT_RECACHE_FRAMES = 12
"""Latent frames re-encoded after a prompt switch (LongLive's local attention window, 12 latent frames)."""


class StreamSession:
    """One batch of videos generated chunk by chunk; owns its frame store, cross-attention K/V and generators.

    :meth:`next_chunk` denoises the next chunk and commits it to the store, except the last chunk of a finite
    stream (nothing attends to it). A stream may start from ``given`` frames (an image, a clip to continue): whole
    chunks of them are committed by the same clean pass as generated chunks (:meth:`ChunkSampler.commit_chunk`),
    and a last partial chunk of them is completed by the first generated chunk, so they are frames ``0..G-1`` of
    the stream and its chunks are yielded like any other (``Chunk.given`` says how many of a chunk's frames are
    given). Between two chunks the session can switch its prompt (:meth:`switch_prompt`),
    be saved (:meth:`state_tensors` / :meth:`state_meta`) and be restored into a fresh session (:meth:`restore`,
    after :meth:`replay` when the snapshot holds clean latents instead of the store): a restored session continues
    bit for bit.

    :meth:`switch_prompt` works LongLive-style: the new prompt's cross-attention K/V replace the old ones, then the
    DiT runs once at t = 0 over the last ``recache_frames`` committed clean latents with the new context,
    block-causally (each chunk-aligned group attends to the recached frames before it, at their true positions),
    and their K/V overwrite the store's. Frames older than the recache window keep their K/V.

    Args:
        sampler: the model, memory policy and schedule.
        context: ``[B, L, text_dim]`` text embeddings, one row per sample.
        seeds: one per sample; a sample's video depends only on its prompt(s) and seed.
        latent_hw: latent height and width.
        num_frames: latent frames of the stream, given ones included (a multiple of the chunk size), or None for an
            endless stream.
        prompts: the prompts behind ``context`` (reported by :attr:`prompts`).
        encode_text: prompts -> context, needed by :meth:`switch_prompt`.
        keep_latents: most committed latent frames a prompt switch can re-encode (kept on the device).
        record_latents: keep every committed chunk's clean latents on the host (for snapshots that replay).
        store: an empty store to fill (default: a new one sized by the policy).
        given: ``[1 or B, C, G, h, w]`` clean latents of user frames that start the stream (fewer than
            ``num_frames``).
    """

    def __init__(
        self,
        sampler: ChunkSampler,
        context: torch.Tensor,
        seeds: Sequence[int],
        latent_hw: tuple[int, int],
        num_frames: int | None = None,
        *,
        prompts: Sequence[str] | None = None,
        encode_text: Callable[[list[str]], torch.Tensor] | None = None,
        keep_latents: int = 0,
        record_latents: bool = False,
        store: FrameStore | None = None,
        given: torch.Tensor | None = None,
    ):
        f = sampler.chunk_frames
        if context.ndim != 3 or context.shape[0] != len(seeds) or not seeds:
            raise ValueError(f"{len(seeds)} seeds for a context of {context.shape[0] if context.ndim else 0} "
                             "prompts; give one seed per prompt, at least one")
        if prompts is not None and len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds must match")
        if num_frames is not None and (num_frames <= 0 or num_frames % f):
            raise ValueError(f"num_frames={num_frames} must be a positive multiple of the chunk size {f}")
        if keep_latents < 0:
            raise ValueError(f"keep_latents={keep_latents} must be >= 0")
        self.sampler = sampler
        self.latent_hw = latent_hw
        self.num_frames = num_frames
        self.prompts = list(prompts) if prompts is not None else None
        self.encode_text = encode_text
        self.keep_latents = keep_latents
        self.record_latents = record_latents
        self.index = 0
        """Index of the next chunk."""
        with torch.no_grad():
            self.cross_kv: CrossKV = sampler.model.encode_context(context.to(sampler.device))
            self.uncond_kv: CrossKV | None = None
            """The empty (all-zero) context's keys/values when the schedule guides (classifier-free guidance)."""
            if sampler.schedule.guidance != 1:
                self.uncond_kv = sampler.model.encode_context(torch.zeros_like(context, device=sampler.device))
        if store is not None and (store.num_frames or store.batch != len(seeds)):
            raise ValueError(f"a new session needs an empty store for {len(seeds)} samples; this one holds "
                             f"{store.num_frames} frames of {store.batch} samples")
        self.store: FrameStore = store if store is not None else sampler.new_store(len(seeds), latent_hw)
        self.generators = [torch.Generator(sampler.device).manual_seed(int(s)) for s in seeds]
        self._recent: torch.Tensor | None = None  # [B, C, n <= keep_latents, H, W], ends at store.num_frames
        self._recorded: list[torch.Tensor] = []  # host copies of every committed chunk's clean latents
        self.given: torch.Tensor | None = None  # [B, C, G, h, w] until the chunks holding them are made
        self.given_frames = 0
        """Frames ``0..given_frames-1`` of the stream are given, not generated."""
        if given is not None:
            self._set_given(given)

    def _set_given(self, given: torch.Tensor) -> None:
        cfg = self.sampler.model.config
        if given.ndim != 5 or given.shape[1] != cfg.in_dim or tuple(given.shape[3:]) != tuple(self.latent_hw):
            raise ValueError(f"given latents must be [B, {cfg.in_dim}, G, {self.latent_hw[0]}, {self.latent_hw[1]}], "
                             f"got {list(given.shape)}")
        if given.shape[0] not in (1, self.batch) or given.shape[2] < 1:
            raise ValueError(f"given latents for {given.shape[0]} samples and {given.shape[2]} frames; the session "
                             f"has {self.batch} samples")
        if self.num_frames is not None and given.shape[2] >= self.num_frames:
            raise ValueError(f"{given.shape[2]} given latent frames leave nothing to generate in a stream of "
                             f"{self.num_frames}")
        self.given = given.to(self.sampler.device, torch.float32).expand(self.batch, -1, -1, -1, -1)
        self.given_frames = given.shape[2]

    @property
    def batch(self) -> int:
        return len(self.generators)

    @property
    def committed_frames(self) -> int:
        return self.store.num_frames

    @property
    def total_chunks(self) -> int | None:
        return None if self.num_frames is None else self.num_frames // self.sampler.chunk_frames

    @property
    def done(self) -> bool:
        return self.total_chunks is not None and self.index >= self.total_chunks

    def __iter__(self) -> Iterator[Chunk]:
        """The remaining chunks, in order (endless for an endless stream)."""
        while not self.done:
            yield self.next_chunk()

    def next_chunk(self) -> Chunk:
        """Denoise, commit and return the next chunk; the last chunk of a finite stream is not committed."""
        if self.done:
            raise RuntimeError(f"the stream is finished ({self.num_frames} latent frames made)")
        last = self.total_chunks is not None and self.index + 1 == self.total_chunks
        f, start = self.sampler.chunk_frames, self.store.num_frames
        g = min(max(self.given_frames - start, 0), f)
        given = self.given[:, :, start:start + g] if g else None
        if g == f:
            chunk = self.sampler.commit_chunk(self.store, self.cross_kv, given, self.latent_hw, self.index)
        else:
            chunk = self.sampler.denoise_chunk(self.store, self.cross_kv, self.generators, self.latent_hw,
                                               self.index, commit=not last, known=given, uncond_kv=self.uncond_kv)
        if self.given_frames:
            mark_given(chunk.trace, self.given_frames)
        if start + f >= self.given_frames:
            self.given = None  # every given frame is in the store now
        if not last:
            self._remember(chunk.latents)
        self.index += 1
        return chunk

    def _remember(self, latents: torch.Tensor) -> None:
        """Keep committed clean latents ``[B, C, f, H, W]`` for prompt switches and replay snapshots."""
        if self.keep_latents:
            kept = latents if self._recent is None else torch.cat([self._recent, latents], dim=2)
            self._recent = kept[:, :, -self.keep_latents:]
        if self.record_latents:
            self._recorded.append(latents.cpu())

    # ---- prompt switching ---------------------------------------------------------------------------------------

    def switch_prompt(self, prompts: str | Sequence[str], recache_frames: int | None = None) -> int:
        """Use ``prompts`` (one, or one per sample) from the next chunk on; returns the frames re-encoded.

        Raises:
            ValueError: the text encoder rejects a prompt, the prompt count is wrong, or ``recache_frames`` is
                outside ``0..keep_latents``; nothing has changed then.
        """
        if self.encode_text is None:
            raise RuntimeError("this session was made without a text encoder; use switch_context")
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

    def _recache(self, cross_kv: CrossKV, n: int) -> int:
        """Re-encode the last ``n`` (at most those kept and still held) committed frames under ``cross_kv``."""
        end = self.store.num_frames
        kept = 0 if self._recent is None else self._recent.shape[2]
        first = end
        while first > end - min(n, kept) and self.store.holds(first - 1):
            first -= 1
        if first == end:
            return 0
        f = self.sampler.chunk_frames
        bounds = [first, *range((first // f + 1) * f, end, f), end]  # groups on the chunk grid
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            keys, values = self._encode_frames(self._recent[:, :, kept - (end - s): kept - (end - e)], s,
                                               list(range(first, s)), cross_kv)
            self.store.rewrite(s, keys, values)
        return end - first

    def _encode_frames(
        self, x: torch.Tensor, start: int, earlier: list[int], cross_kv: CrossKV
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer K/V ``[B, n*T, H, D]`` of clean latents ``x`` ``[B, C, n, H, W]`` (frames ``start..``) at
        t = 0, attending to the stored ``earlier`` frames at their own positions."""
        model = self.sampler.model
        memory = None
        if earlier:
            view = MemoryView.shared(start, self.batch, earlier, earlier, ["window"] * len(earlier),
                                     range(start, start + x.shape[2]))
            memory = self.store.read(view, model.token_grid(self.latent_hw), model.config.head_dim)
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        t = torch.zeros(self.batch, x.shape[2], device=self.sampler.device)
        model.encode_chunk(x, t, cross_kv, torch.arange(start, start + x.shape[2]),
                           lambda layer, k, v: (keys.append(k), values.append(v)), memory=memory)
        return keys, values

    # ---- snapshots ----------------------------------------------------------------------------------------------

    def recorded_latents(self) -> torch.Tensor:
        """``[B, C, committed frames, H, W]``: every committed frame's clean latents (needs ``record_latents``)."""
        if not self.record_latents:
            raise RuntimeError("this session does not record its latents (record_latents=False)")
        latents = torch.cat(self._recorded, dim=2) if self._recorded else None
        if latents is None or latents.shape[2] != self.store.num_frames:
            held = 0 if latents is None else latents.shape[2]
            raise ValueError(f"{held} clean latents kept for {self.store.num_frames} committed frames")
        return latents

    def state_tensors(self, with_store: bool = True) -> dict[str, torch.Tensor]:
        """The session's state as named CPU tensors (with :meth:`state_meta`); ``with_store=False`` leaves out the
        store's buffers (a restore then needs :meth:`replay` first)."""
        out = {f"store.{k}": v.cpu() for k, v in self.store.state_tensors().items()} if with_store else {}
        out.update({f"generator.{i}": g.get_state() for i, g in enumerate(self.generators)})
        if self.given is not None:  # given frames not yet in the store
            out["given"] = self.given.cpu()
        return out

    def state_meta(self) -> dict:
        return {"chunk_index": self.index, "given_frames": self.given_frames, **self.store.state_meta()}

    def replay(self, latents: torch.Tensor) -> None:
        """Rebuild the (empty) store from the clean latents ``[B, C, F, h, w]`` of the frames committed so far."""
        self.sampler.replay(self.store, self.cross_kv, latents, self.latent_hw)
        for chunk in latents.split(self.sampler.chunk_frames, dim=2):
            self._remember(chunk.to(self.sampler.device))

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Load a state saved by :meth:`state_tensors` / :meth:`state_meta`. A state without the store's buffers
        needs the store rebuilt by :meth:`replay` first; it is checked against the saved map."""
        if "store.k" in tensors:
            self.store.load_state({k.removeprefix("store."): v for k, v in tensors.items()
                                   if k.startswith("store.")}, meta)
        elif any(self.store.state_meta()[key] != meta[key] for key in ("num_frames", "slot_frame")):
            raise ValueError(f"the replayed frame store ({self.store.num_frames} frames) does not match the saved "
                             f"one ({meta['num_frames']} frames)")
        for i, generator in enumerate(self.generators):
            generator.set_state(tensors[f"generator.{i}"])
        self.index = int(meta["chunk_index"])
        self.given_frames = int(meta.get("given_frames", 0))
        self.given = tensors["given"].to(self.sampler.device) if "given" in tensors else None


def mark_given(records: list[dict], given_frames: int) -> None:
    """Mark user frames in trace records: a chunk's own given frames get role ``given`` (not ``current``), and an
    attended cached frame that is a given one keeps its policy role with ``"given": true``."""
    for record in records:
        for entry in record["attended"]:
            if 0 <= entry["frame"] < given_frames:  # negative: a synthesised frame (MemRoPE's EMA slots)
                if entry["role"] == "current":
                    entry["role"] = "given"
                else:
                    entry["given"] = True
