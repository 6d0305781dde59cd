"""VideoPipeline: a loaded model with its text encoder, codec and video geometry; it opens stream sessions."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from relaxforcing.codecs.base import Codec
from relaxforcing.memory import build_policy
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import ChunkSampler, FlowSchedule, StreamSession
from relaxforcing.text.base import TextEncoder


@dataclass
class VideoPipeline:
    """Everything needed to turn prompts into latent chunks and chunks into frames (see ``loaders``)."""

    model: CausalWanModel
    encode_text: TextEncoder
    """prompts -> ``[B, L, text_dim]`` embeddings."""
    codec: Codec
    latent_hw: tuple[int, int]
    fps: int = 16
    frames_per_latent: int = 4
    schedule: FlowSchedule = field(default_factory=FlowSchedule)
    upscale: int = 1
    """Pixel repetition applied when writing mp4 (the toy model renders 64x64)."""
    name: str = "model"
    offload: str = "auto"
    """Where sessions keep their frame stores: auto, none, history or all (see ``ChunkSampler``)."""

    @property
    def chunk_frames(self) -> int:
        return self.model.config.chunk_frames

    def latent_frames(self, seconds: float) -> int:
        """Latent frames for ``seconds`` of video: ``ceil(seconds * fps / frames_per_latent)``, in whole chunks.

        This is the count the Self-Forcing family names by its length (5 s -> 21 latents as in Self-Forcing,
        60 s -> 240 as in LongLive and the Relax-Forcing evaluation).
        """
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"--seconds must be a positive number, got {seconds}")
        latents = math.ceil(round(seconds * self.fps / self.frames_per_latent, 9))
        return math.ceil(latents / self.chunk_frames) * self.chunk_frames

    def video_frames(self, latent_frames: int) -> int:
        """Frames that ``latent_frames`` latents decode to (Wan VAE: 1 + 4(F - 1); toy codec: 4F)."""
        return self.codec.video_frames(latent_frames)

    def prepare(self, prompts: Sequence[str]) -> None:
        """Make the prompts ready before any DiT work (umT5: one encoder load for all of them, then freed)."""
        self.encode_text.prepare(prompts)

    def sampler(self, memory: str, offload: str | None = None) -> ChunkSampler:
        """The one-chunk step under the memory policy ``memory`` (a spec such as ``relax:lambda=1.5``), its stores
        offloaded as ``offload`` says (default: :attr:`offload`)."""
        return ChunkSampler(self.model, build_policy(memory, self.chunk_frames), self.schedule,
                            offload or self.offload)

    def session(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_frames: int | None,
        memory: str = "relax",
        *,
        keep_latents: int = 0,
        record_latents: bool = False,
        offload: str | None = None,
    ) -> StreamSession:
        """A stream of ``num_frames`` latent frames (None: endless) per (prompt, seed) under ``memory``, its frame
        store offloaded as ``offload`` says (default: :attr:`offload`)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds must match")
        return StreamSession(self.sampler(memory, offload), self.encode_text(list(prompts)), seeds, self.latent_hw,
                             num_frames, prompts=prompts, encode_text=self.encode_text, keep_latents=keep_latents,
                             record_latents=record_latents)

    def fingerprint(self) -> str:
        """A short digest of the model's sizes and some of its weights (to refuse resuming with another model)."""
        digest = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode())
        for weight in (self.model.patch_embedding.weight, self.model.head.head.weight):
            digest.update(weight.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]
