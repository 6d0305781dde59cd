"""ChunkSampler: denoise one chunk against the memory, then commit its clean keys/values (the model-side step)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from relaxforcing.memory.policies.base import MemoryPolicy
from relaxforcing.memory.store import OFFLOAD_MODES, FrameStore
from relaxforcing.memory.view import MemoryView
from relaxforcing.model.wan import CausalWanModel, CrossKV, MemoryKV
from relaxforcing.sampling.guidance import GuidedForward
from relaxforcing.sampling.schedule import FlowSchedule


@dataclass
class Chunk:
    """One finished chunk of a stream."""

    index: int
    start: int
    """Global latent index of the chunk's first frame."""
    latents: torch.Tensor
    """``[B, C, f, H, W]`` clean latents (float32)."""
    trace: list[dict] = field(default_factory=list)
    """One record per sample: attended frames with roles and positions (and relax candidate scores)."""
    given: int = 0
    """Leading frames of the chunk given by the user (an image, a clip's context): committed as they are, not
    denoised."""
    ready: torch.cuda.Event | None = None
    """On CUDA, recorded on the sampling stream once :attr:`latents` are final, before the chunk's clean pass: a
    decode that waits for it runs beside the clean pass instead of after it."""

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the chunk and its frames if a latent is NaN or Inf."""
        if not torch.isfinite(self.latents).all():
            raise FloatingPointError(f"non-finite latents in chunk {self.index} (frames {self.start}.."
                                     f"{self.start + self.latents.shape[2] - 1}); generation stopped")


class ChunkSampler:
    """Self-Forcing's few-step causal inference for one chunk, with a pluggable memory policy.

    Per chunk: every denoising step predicts flow v, x0 = x_t - sigma*v (float64), re-noised with fresh noise
    for the next step; a final clean pass at t = 0 writes the chunk's keys/values into the store. The loop over
    chunks lives in :class:`~relaxforcing.sampling.session.StreamSession`.
    """

    def __init__(self, model: CausalWanModel, policy: MemoryPolicy, schedule: FlowSchedule | None = None,
                 offload: str = "auto"):
        if policy.chunk_frames != model.config.chunk_frames:
            raise ValueError(f"policy chunk size {policy.chunk_frames} != model chunk size "
                             f"{model.config.chunk_frames}")
        self.model = model
        self.policy = policy
        self.schedule = schedule or FlowSchedule()
        self.steady_frames = policy.steady_frames()
        """Cached frames attended at steady state: chunks that attend this many run the compiled blocks."""
        self.offload = resolve_offload(offload, policy, self.device)
        """Where new stores keep frames (``FrameStore``'s modes; ``auto`` resolved)."""
        self.timesteps = self.schedule.timesteps()
        self.sigmas = [self.schedule.sigma(t) for t in self.timesteps]
        self._guided = GuidedForward(self.schedule.guidance) if self.schedule.guidance != 1 else None

    @property
    def device(self) -> torch.device:
        return self.model.patch_embedding.weight.device

    @property
    def chunk_frames(self) -> int:
        return self.policy.chunk_frames

    def new_store(self, batch: int, latent_hw: tuple[int, int]) -> FrameStore:
        """An empty store sized by the policy: its sinks plus a ring of ``max_lag`` frames, offloaded as
        :attr:`offload` says, with as many staging slots as any chunk reads from host memory; keys stored rotated
        when the policy attends every frame at its own position (write-time RoPE)."""
        cfg, policy = self.model.config, self.policy
        h, w = self.model.token_grid(latent_hw)
        recent = policy.recent_frames if self.offload == "history" else 0
        return FrameStore(num_layers=cfg.num_layers, batch=batch, tokens_per_frame=h * w, num_heads=cfg.num_heads,
                          head_dim=cfg.head_dim, sink_frames=policy.sink_frames, ring_frames=max(1, policy.max_lag),
                          dtype=self.model.patch_embedding.weight.dtype, device=self.device, offload=self.offload,
                          recent_frames=recent, staging_frames=staging_frames(policy, self.offload),
                          synthesised_frames=policy.synthesised_frames,
                          rotated_grid=(h, w) if policy.absolute_positions else None)

    def noise(self, generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
        """Fresh Gaussian noise ``[B, *shape]``, each sample from its own generator."""
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in generators])

    def read_memory(self, store: FrameStore, start: int, latent_hw: tuple[int, int]
                    ) -> tuple[MemoryKV | None, MemoryView]:
        """The policy's view of ``store`` for the chunk at ``start``, and the keys/values it names."""
        view = self.policy.select(store, start)
        return store.read(view, self.model.token_grid(latent_hw), self.model.config.head_dim), view

    def compiled_for(self, view: MemoryView) -> bool:
        """Whether a chunk under ``view`` runs the compiled blocks: at steady state only (warm-up chunks, whose
        memory is still growing, run eagerly rather than compile a graph for each length)."""
        return view.frames.shape[1] == self.steady_frames

    @torch.no_grad()
    def denoise_chunk(
        self,
        store: FrameStore,
        cross_kv: CrossKV,
        generators: list[torch.Generator],
        latent_hw: tuple[int, int],
        index: int,
        commit: bool = True,
        known: torch.Tensor | None = None,
        uncond_kv: CrossKV | None = None,
    ) -> Chunk:
        """Denoise the chunk starting at ``store.num_frames``; commit its clean keys/values unless told not to.

        ``uncond_kv``: the empty context's cross-attention keys/values, for classifier-free guidance
        (``schedule.guidance`` > 1): each step's flow is then ``uncond + guidance * (cond - uncond)``, both read
        against the same memory in one forward of twice the batch (:class:`GuidedForward`); the clean pass runs
        with ``cross_kv`` alone.

        ``known`` ``[B, C, g < f, h, w]``: clean latents of the chunk's first ``g`` frames (an image). They sit in the
        chunk at t = 0 in every step (the model takes one timestep per frame), the other frames are denoised
        around them, and they are returned and committed exactly as given.
        """
        model, f, start = self.model, self.chunk_frames, store.num_frames
        g = 0 if known is None else known.shape[2]
        if not 0 <= g < f:
            raise ValueError(f"{g} known frames in a chunk of {f}; commit whole given chunks with commit_chunk")
        memory, view = self.read_memory(store, start, latent_hw)
        compiled = self.compiled_for(view)
        shape = (model.config.in_dim, f, *latent_hw)
        x = self.noise(generators, shape)
        batch = x.shape[0]
        guided = self._guided if uncond_kv is not None else None
        if guided is not None:
            paired_kv, paired_memory = guided.pair_context(cross_kv, uncond_kv), guided.pair_memory(memory)
        for i, (timestep, sigma) in enumerate(zip(self.timesteps, self.sigmas, strict=True)):
            t = torch.full((batch, f), timestep, device=self.device)
            if g:
                x[:, :, :g], t[:, :g] = known, 0.0
            if guided is None:
                flow = model.forward_chunk(x, t, cross_kv, view.query_positions, memory=memory, compiled=compiled)
            else:
                flow = guided.flow(model, x, t, paired_kv, view.query_positions, paired_memory, compiled)
            x0 = (x.double() - sigma * flow.double()).float()
            if g:
                x0[:, :, :g] = known
            if i + 1 < len(self.timesteps):
                next_sigma = self.sigmas[i + 1]
                if self.schedule.fresh_noise:
                    noise = self.noise(generators, shape)
                else:
                    noise = (x.double() + (1 - sigma) * flow.double()).float()
                x = (1 - next_sigma) * x0 + next_sigma * noise
        ready = None
        if x0.is_cuda:
            ready = torch.cuda.Event()
            ready.record()
        if commit:
            self.clean_pass(store, cross_kv, x0, memory, view.query_positions, compiled)
        return Chunk(index=index, start=start, latents=x0, trace=view.trace_records(index, self.policy.name),
                     given=g, ready=ready)

    @torch.no_grad()
    def commit_chunk(self, store: FrameStore, cross_kv: CrossKV, latents: torch.Tensor, latent_hw: tuple[int, int],
                     index: int) -> Chunk:
        """Commit given clean latents ``[B, C, f, h, w]`` (user frames) as the chunk at ``store.num_frames``: the
        clean pass a generated chunk ends with, under the view the policy selects for it."""
        if latents.shape[2] != self.chunk_frames:
            raise ValueError(f"a given chunk has {self.chunk_frames} frames, got {latents.shape[2]}")
        start = store.num_frames
        memory, view = self.read_memory(store, start, latent_hw)
        latents = latents.to(self.device, torch.float32)
        self.clean_pass(store, cross_kv, latents, memory, view.query_positions, self.compiled_for(view))
        return Chunk(index=index, start=start, latents=latents, trace=view.trace_records(index, self.policy.name),
                     given=self.chunk_frames)

    @torch.no_grad()
    def clean_pass(self, store: FrameStore, cross_kv: CrossKV, x0: torch.Tensor, memory: MemoryKV | None,
                   queries: torch.Tensor, compiled: bool = False) -> None:
        """Run the clean chunk ``x0`` ``[B, C, f, h, w]`` at t = 0 and commit its keys/values to the store."""
        start = store.num_frames
        t = torch.zeros(x0.shape[0], x0.shape[2], device=self.device)
        self.model.encode_chunk(x0, t, cross_kv, queries, lambda layer, k, v: store.write(layer, start, k, v),
                                memory=memory, compiled=compiled)  # layer by layer
        store.advance(start + x0.shape[2])

    @torch.no_grad()
    def replay(self, store: FrameStore, cross_kv: CrossKV, latents: torch.Tensor, latent_hw: tuple[int, int]) -> None:
        """Refill an empty store from the clean latents ``[B, C, F, h, w]`` of every committed frame.

        Each chunk's clean pass runs again, in order, under the view the policy selects from the store as rebuilt
        so far: the same inputs and operations as when the frames were made, so the same keys/values, bit for bit.
        """
        f = self.chunk_frames
        if store.num_frames != 0 or latents.shape[2] % f:
            raise ValueError(f"replay needs an empty store and whole chunks, got {store.num_frames} frames stored "
                             f"and {latents.shape[2]} latents")
        for start in range(0, latents.shape[2], f):
            self.commit_chunk(store, cross_kv, latents[:, :, start:start + f], latent_hw, start // f)


def resolve_offload(offload: str, policy: MemoryPolicy, device: torch.device) -> str:
    """``none``, ``history`` or ``all`` for ``policy`` on ``device``: ``auto`` is ``history`` on CUDA for a policy that
    stores frames it does not read every chunk (``recent_frames < max_lag``, e.g. relax), else ``none``; ``history``
    for a policy without such frames is ``none`` (nothing to offload)."""
    check_offload(offload)
    has_history = policy.recent_frames < policy.max_lag
    if offload == "auto":
        return "history" if device.type == "cuda" and has_history else "none"
    if offload == "history" and not has_history:
        return "none"
    return offload


def check_offload(offload: str) -> None:
    """Raise a one-line ValueError unless ``offload`` is auto, none, history or all."""
    if offload not in ("auto", *OFFLOAD_MODES):
        raise ValueError(f"--offload {offload!r}: choose auto, {', '.join(OFFLOAD_MODES)}")


def staging_frames(policy: MemoryPolicy, offload: str) -> int:
    """Most frames any chunk of ``policy`` reads that are held only in host memory under ``offload``."""
    if offload == "none":
        return 0
    recent = policy.recent_frames if offload == "history" else 0
    sinks_resident = offload == "history"
    most = 0
    for view in policy.layouts():
        far = {f for f in view.frames.flatten().tolist()  # synthesised frames (f < 0) stay on the device
               if f >= 0 and not (f < policy.sink_frames and sinks_resident) and view.start - f > recent}
        most = max(most, len(far))
    return most
