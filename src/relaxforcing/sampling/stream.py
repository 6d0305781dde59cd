"""Streaming chunk-by-chunk sampler: denoise a chunk against the memory, commit it, yield it, repeat."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from relaxforcing.memory.policies.base import MemoryPolicy
from relaxforcing.memory.reader import MemoryReader
from relaxforcing.memory.store import FrameStore
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling.schedule import FlowSchedule

TraceSink = Callable[[dict], None]


@dataclass
class Chunk:
    """One finished chunk of the stream."""

    index: int
    start: int
    """Global latent index of the chunk's first frame."""
    latents: torch.Tensor
    """``[B, C, f, H, W]`` clean latents (float32)."""
    trace: list[dict] = field(default_factory=list)
    """One record per sample: attended frames with roles and positions (and relax candidate scores)."""

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the chunk and its frames if a latent is NaN or Inf."""
        if not torch.isfinite(self.latents).all():
            raise FloatingPointError(f"non-finite latents in chunk {self.index} (frames {self.start}.."
                                     f"{self.start + self.latents.shape[2] - 1}); generation stopped")


@dataclass
class StreamState:
    """Everything a stream carries from one chunk to the next: with it, a stopped stream continues bitwise."""

    store: FrameStore
    generators: list[torch.Generator]
    """One noise generator per sample."""
    chunk_index: int = 0
    """The next chunk to make."""

    def tensors(self, with_store: bool = True) -> dict[str, torch.Tensor]:
        """The state as named CPU tensors (plus :meth:`meta`) for a snapshot; ``with_store=False`` leaves out the
        store's buffers (to be rebuilt by :meth:`StreamSampler.replay`)."""
        out = {f"store.{k}": v.cpu() for k, v in self.store.state_tensors().items()} if with_store else {}
        out.update({f"generator.{i}": g.get_state() for i, g in enumerate(self.generators)})
        return out

    def meta(self) -> dict:
        return {"chunk_index": self.chunk_index, **self.store.state_meta()}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Load a snapshot taken by :meth:`tensors` / :meth:`meta` into this state. A snapshot without the store's
        buffers needs the store already rebuilt (:meth:`StreamSampler.replay`); it is checked against the saved map.
        """
        if "store.k" in tensors:
            self.store.load_state({k.removeprefix("store."): v for k, v in tensors.items()
                                   if k.startswith("store.")}, meta)
        elif self.store.state_meta() != {"num_frames": meta["num_frames"], "slot_frame": meta["slot_frame"]}:
            raise ValueError(f"the replayed frame store ({self.store.num_frames} frames) does not match the saved "
                             f"one ({meta['num_frames']} frames)")
        for i, generator in enumerate(self.generators):
            generator.set_state(tensors[f"generator.{i}"])
        self.chunk_index = int(meta["chunk_index"])


class StreamSampler:
    """Self-Forcing's few-step causal inference with a pluggable memory policy.

    Per chunk: every denoising step predicts flow v, x0 = x_t - sigma*v (float64), re-noised with fresh noise
    for the next step; a final clean pass at t = 0 writes the chunk's keys/values into the store.
    """

    def __init__(self, model: CausalWanModel, policy: MemoryPolicy, schedule: FlowSchedule | None = None):
        if policy.chunk_frames != model.config.chunk_frames:
            raise ValueError(f"policy chunk size {policy.chunk_frames} != model chunk size "
                             f"{model.config.chunk_frames}")
        self.model = model
        self.policy = policy
        self.schedule = schedule or FlowSchedule()
        self.timesteps = self.schedule.timesteps()
        self.sigmas = [self.schedule.sigma(t) for t in self.timesteps]

    @property
    def device(self) -> torch.device:
        return self.model.patch_embedding.weight.device

    def new_store(self, batch: int, latent_hw: tuple[int, int]) -> FrameStore:
        cfg = self.model.config
        h, w = self.model.token_grid(latent_hw)
        return FrameStore(num_layers=cfg.num_layers, batch=batch, tokens_per_frame=h * w, num_heads=cfg.num_heads,
                          head_dim=cfg.head_dim, sink_frames=self.policy.sink_frames,
                          ring_frames=max(1, self.policy.max_lag), dtype=self.model.patch_embedding.weight.dtype,
                          device=self.device)

    def new_state(self, seeds: Sequence[int], latent_hw: tuple[int, int], store: FrameStore | None = None
                  ) -> StreamState:
        """A stream's starting state: an empty store and one seeded generator per sample."""
        if store is not None and store.num_frames:
            raise ValueError(f"a new stream needs an empty store; this one holds {store.num_frames} frames")
        return StreamState(store if store is not None else self.new_store(len(seeds), latent_hw),
                           [torch.Generator(self.device).manual_seed(int(s)) for s in seeds])

    def stream(
        self,
        context: torch.Tensor,
        seeds: Sequence[int],
        latent_hw: tuple[int, int],
        num_frames: int | None = None,
        trace: TraceSink | None = None,
        store: FrameStore | None = None,
        state: StreamState | None = None,
    ) -> Iterator[Chunk]:
        """Yield chunks of clean latents as soon as each is done.

        Args:
            context: ``[B, L, text_dim]`` text embeddings, one row per sample.
            seeds: one seed per sample; a sample's video depends only on its prompt and seed.
            latent_hw: latent height and width.
            num_frames: latent frames to make (a multiple of the chunk size), or None for an endless stream.
            trace: called with one JSON-ready record per chunk and sample.
            store: the frame store to fill (default: a new one sized by the policy).
            state: continue from this state (e.g. a restored snapshot) instead of a fresh one; it is updated in
                place, so that between two chunks it always describes how to continue.
        """
        batch, f = context.shape[0], self.policy.chunk_frames
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds for {batch} prompts")
        if num_frames is not None and (num_frames <= 0 or num_frames % f):
            raise ValueError(f"num_frames={num_frames} must be a positive multiple of the chunk size {f}")
        with torch.no_grad():
            cross_kv = self.model.encode_context(context.to(self.device))
            state = state if state is not None else self.new_state(seeds, latent_hw, store)
            if state.store.batch != batch or len(state.generators) != batch:
                raise ValueError(f"the stream state holds {state.store.batch} samples, the context {batch}")
            while num_frames is None or state.chunk_index * f < num_frames:
                last = num_frames is not None and (state.chunk_index + 1) * f >= num_frames
                chunk = self.denoise_chunk(state.store, cross_kv, state.generators, latent_hw, state.chunk_index,
                                           commit=not last)  # nothing attends to the last chunk: not stored
                if trace is not None:
                    for record in chunk.trace:
                        trace(record)
                state.chunk_index += 1
                yield chunk

    def noise(self, generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        """Fresh Gaussian noise ``[B, *shape]``, each sample from its own generator."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in generators])

    def denoise_chunk(
        self,
        store: FrameStore,
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
        generators: list[torch.Generator],
        latent_hw: tuple[int, int],
        index: int,
        commit: bool = True,
    ) -> Chunk:
        """Denoise the chunk starting at ``store.num_frames``; commit its clean keys/values unless told not to."""
        model, f, start = self.model, self.policy.chunk_frames, store.num_frames
        view = self.policy.select(store, start)
        reader = store.reader(view, model.token_grid(latent_hw), model.config.head_dim)
        queries = view.query_positions
        shape = (model.config.in_dim, f, *latent_hw)
        x = self.noise(generators, shape)
        batch = x.shape[0]
        for i, (timestep, sigma) in enumerate(zip(self.timesteps, self.sigmas, strict=True)):
            t = torch.full((batch, f), timestep, device=self.device)
            flow = model.forward_chunk(x, t, cross_kv, queries, memory=reader)
            x0 = (x.double() - sigma * flow.double()).float()
            if i + 1 < len(self.timesteps):
                next_sigma = self.sigmas[i + 1]
                if self.schedule.fresh_noise:
                    noise = self.noise(generators, shape)
                else:
                    noise = (x.double() + (1 - sigma) * flow.double()).float()
                x = (1 - next_sigma) * x0 + next_sigma * noise
        if commit:
            self.clean_pass(store, cross_kv, x0, reader, queries)
        return Chunk(index=index, start=start, latents=x0, trace=view.trace_records(index, self.policy.name))

    def clean_pass(self, store: FrameStore, cross_kv: list[tuple[torch.Tensor, torch.Tensor]], x0: torch.Tensor,
                   reader: MemoryReader, queries: torch.Tensor) -> None:
        """Run the clean chunk ``x0`` ``[B, C, f, h, w]`` at t = 0 and commit its keys/values to the store."""
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        t = torch.zeros(x0.shape[0], x0.shape[2], device=self.device)
        self.model.forward_chunk(x0, t, cross_kv, queries, memory=reader,
                                 kv_sink=lambda layer, k, v: (keys.append(k), values.append(v)))
        store.commit(store.num_frames, keys, values)

    @torch.no_grad()
    def replay(self, store: FrameStore, cross_kv: list[tuple[torch.Tensor, torch.Tensor]], latents: torch.Tensor,
               latent_hw: tuple[int, int]) -> None:
        """Refill an empty store from the clean latents ``[B, C, F, h, w]`` of every committed frame.

        Each chunk's clean pass runs again, in order, under the view the policy selects from the store as rebuilt
        so far: the same inputs and operations as when the frames were made, so the same keys/values, bit for bit.
        """
        f = self.policy.chunk_frames
        if store.num_frames != 0 or latents.shape[2] % f:
            raise ValueError(f"replay needs an empty store and whole chunks, got {store.num_frames} frames stored "
                             f"and {latents.shape[2]} latents")
        for start in range(0, latents.shape[2], f):
            view = self.policy.select(store, start)
            reader = store.reader(view, self.model.token_grid(latent_hw), self.model.config.head_dim)
            chunk = latents[:, :, start:start + f].to(self.device)
            self.clean_pass(store, cross_kv, chunk, reader, view.query_positions)
