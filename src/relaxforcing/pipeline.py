"""VideoPipeline: a loaded model with its text encoder, codec and video geometry; it opens stream sessions."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from relaxforcing.codecs.base import Codec
from relaxforcing.media import digest, fit_frame, open_clip, read_image
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

    @property
    def frame_hw(self) -> tuple[int, int]:
        """Pixel height and width of the frames the codec makes (before ``upscale``)."""
        ratio = getattr(self.codec, "space_ratio", 1)
        return self.latent_hw[0] * ratio, self.latent_hw[1] * ratio

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
        image: np.ndarray | str | Path | None = None,
        video: np.ndarray | str | Path | None = None,
        context_frames: int | None = None,
        sinks_from_start: bool = False,
        start: StartFrames | None = None,
    ) -> StreamSession:
        """A stream of ``num_frames`` latent frames (None: endless) per (prompt, seed) under ``memory``, its frame
        store offloaded as ``offload`` says (default: :attr:`offload`).

        ``image`` (a file or RGB uint8 ``[H, W, 3]``) starts the video: it is latent frame 0, one of the
        ``num_frames``. ``video`` (a file, or RGB uint8 ``[T, H, W, 3]`` at :attr:`fps`) is continued: its last
        latent frames (``context_frames``, see :meth:`start_from`) are committed first and ``num_frames`` new ones
        follow. ``start`` is an already encoded :meth:`start_from`.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts and {len(seeds)} seeds must match")
        if start is None and (image is not None or video is not None):
            start = self.start_from(image=image, video=video, memory=memory, context_frames=context_frames,
                                    sinks_from_start=sinks_from_start)
        given = None if start is None else start.latents
        if start is not None and start.continues and num_frames is not None:
            num_frames += start.given_frames
        return StreamSession(self.sampler(memory, offload), self.encode_text(list(prompts)), seeds, self.latent_hw,
                             num_frames, prompts=prompts, encode_text=self.encode_text, keep_latents=keep_latents,
                             record_latents=record_latents, given=given)

    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``[T, H, W, 3]`` at :attr:`frame_hw`, ``T = video_frames(F)`` -> latents ``[1, C, F, h, w]``."""
        if not hasattr(self.codec, "encode_frames"):
            raise ValueError(f"the {type(self.codec).__name__} decoder has no encoder; encode images and videos with "
                             "the full codec (e.g. the Wan VAE: --decoder wan)")
        if tuple(frames.shape[1:3]) != self.frame_hw:
            raise ValueError(f"frames of {frames.shape[2]}x{frames.shape[1]} for a model that makes "
                             f"{self.frame_hw[1]}x{self.frame_hw[0]}")
        device = self.model.patch_embedding.weight.device
        return self.codec.encode_frames(torch.from_numpy(np.ascontiguousarray(frames))[None].to(device))

    def context_frames(self, memory: str) -> int:
        """Default latent frames of a clip to continue: what the policy attends at steady state, in whole chunks."""
        return -(-build_policy(memory, self.chunk_frames).steady_frames() // self.chunk_frames) * self.chunk_frames

    def start_from(self, *, image: np.ndarray | str | Path | None = None, video: np.ndarray | str | Path | None = None,
                   memory: str = "relax", context_frames: int | None = None, sinks_from_start: bool = False
                   ) -> StartFrames:
        """Encode what a stream starts from: an ``image`` (its latent frame 0, encoded alone) or the context of a
        ``video`` to continue: its last ``context_frames`` latents (default :meth:`context_frames`; fewer when the
        clip is short), in whole chunks, after, with ``sinks_from_start``, its first chunks (enough to hold the
        policy's sink frames)."""
        if (image is None) == (video is None):
            raise ValueError("give an image or a video to start from (one of them)")
        if image is not None:
            picture = read_image(image) if isinstance(image, str | Path) else image
            frame = fit_frame(picture, self.frame_hw)
            frames = np.repeat(frame[None], self.codec.video_frames(1), axis=0)
            return StartFrames(self.encode_frames(frames), continues=False, digest=digest(frame))
        f = self.chunk_frames
        wanted = self.context_frames(memory) if context_frames is None else context_frames
        if wanted < 1:
            raise ValueError(f"context_frames={wanted} must be >= 1")
        wanted = -(-wanted // f) * f
        sinks = 0
        if sinks_from_start:
            sink_frames = build_policy(memory, f).sink_frames
            if not sink_frames:
                raise ValueError(f"--sinks-from-start: the {memory.split(':')[0]} policy keeps no sink frames")
            sinks = -(-sink_frames // f) * f
        need = self.codec.video_frames
        if isinstance(video, str | Path):
            head, tail, count = open_clip(video).context(self.frame_hw, self.fps, need(sinks) if sinks else 0,
                                                         need(wanted))
        else:
            clip = np.stack([fit_frame(frame, self.frame_hw) for frame in video]) if len(video) else video
            if not len(clip):
                raise ValueError("the video to continue has no frames")
            head, tail, count = clip[:need(sinks) if sinks else 0], clip[-need(wanted):], len(clip)
        if count < need(f):
            raise ValueError(f"the video to continue has {count} frames at {self.fps} fps; it needs at least "
                             f"{need(f)} (one chunk of {f} latent frames)")
        if sinks and count < need(sinks) + need(wanted):  # the clip is short: its start is in the context anyway
            sinks, head = 0, head[:0]
        latents = wanted
        while need(latents) > count:
            latents -= f
        tail = tail[-need(latents):]
        parts = [self.encode_frames(part) for part in (head, tail) if len(part)]
        return StartFrames(torch.cat(parts, dim=2), continues=True, digest=digest(np.concatenate([head, tail])),
                           video_frames=count)

    def fingerprint(self) -> str:
        """A short digest of the model's sizes and some of its weights (to refuse resuming with another model)."""
        digest = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode())
        for weight in (self.model.patch_embedding.weight, self.model.head.head.weight):
            digest.update(weight.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass
class StartFrames:
    """What a stream starts from, encoded: an image (the video's first latent frame) or a clip's context (the
    video continues the clip)."""

    latents: torch.Tensor
    """``[1, C, G, h, w]`` clean latents, committed as the stream's frames ``0..G-1``."""
    continues: bool
    """True for a clip's context: the new video follows it (its frames are not part of the new video)."""
    digest: str
    """Of the pixels encoded: a resumed run refuses an input that changed."""
    video_frames: int = 1
    """Frames of the clip at the model's rate (1 for an image)."""

    @property
    def given_frames(self) -> int:
        return self.latents.shape[2]

    def describe(self) -> dict:
        return {"continues": self.continues, "given_frames": self.given_frames, "digest": self.digest}
