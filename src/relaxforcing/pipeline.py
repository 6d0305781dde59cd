"""End-to-end generation: prompts -> text encoder -> streaming sampler + memory -> codec -> mp4 writer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from relaxforcing.memory import build_policy
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import Chunk, FlowSchedule, StreamSampler
from relaxforcing.video import VideoWriter


class ChunkDecoder(Protocol):
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, f, h, w]`` latents -> uint8 frames ``[B, T, H, W, 3]``, carrying state across calls."""
        ...


class Codec(Protocol):
    def stream(self) -> ChunkDecoder:
        """A fresh streaming decoder for one video (batch)."""
        ...


@dataclass
class VideoPipeline:
    """A loaded model with everything needed to turn prompts into videos."""

    model: CausalWanModel
    encode_text: Callable[[list[str]], torch.Tensor]
    """prompts -> ``[B, L, text_dim]`` embeddings."""
    codec: Codec
    latent_hw: tuple[int, int]
    fps: int = 16
    frames_per_latent: int = 4
    schedule: FlowSchedule = field(default_factory=FlowSchedule)
    upscale: int = 1
    """Pixel repetition applied when writing mp4 (the toy model renders 64x64)."""
    name: str = "model"

    def latent_frames(self, seconds: float) -> int:
        """Latent frames for ``seconds`` of video, rounded up to whole chunks."""
        if not seconds > 0:
            raise ValueError(f"--seconds must be positive, got {seconds}")
        chunk = self.model.config.chunk_frames
        frames = int(np.ceil(seconds * self.fps / self.frames_per_latent))
        return int(np.ceil(frames / chunk) * chunk)

    def sampler(self, memory: str) -> StreamSampler:
        return StreamSampler(self.model, build_policy(memory, self.model.config.chunk_frames), self.schedule)

    def stream(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_frames: int | None,
        memory: str = "relax",
        trace: Callable[[dict], None] | None = None,
    ) -> Iterator[tuple[Chunk, np.ndarray]]:
        """Yield each finished chunk with its decoded frames ``[B, T, H, W, 3]`` uint8."""
        sampler = self.sampler(memory)
        context = self.encode_text(list(prompts))
        decoder = self.codec.stream()
        for chunk in sampler.stream(context, seeds, self.latent_hw, num_frames=num_frames, trace=trace):
            if not torch.isfinite(chunk.latents).all():
                raise FloatingPointError(f"non-finite latents in chunk {chunk.index} (frames {chunk.start}.."
                                         f"{chunk.start + chunk.latents.shape[2] - 1}); generation stopped")
            yield chunk, decoder.decode(chunk.latents).cpu().numpy()

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        seconds: float,
        outputs: Sequence[Path],
        memory: str = "relax",
        trace_path: Path | None = None,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> dict:
        """Generate one video per (prompt, seed) and append frames to ``outputs`` as they are decoded.

        Returns timing statistics. ``progress(done_chunks, total_chunks, video_frames_per_second)``.
        """
        if not (len(prompts) == len(seeds) == len(outputs)):
            raise ValueError(f"{len(prompts)} prompts, {len(seeds)} seeds and {len(outputs)} outputs must match")
        num_frames = self.latent_frames(seconds)
        total_chunks = num_frames // self.model.config.chunk_frames
        began = time.perf_counter()
        first_frame_s = None
        frames_done = 0
        with ExitStack() as stack:
            writers = [stack.enter_context(VideoWriter(p, fps=self.fps, upscale=self.upscale)) for p in outputs]
            trace_file = stack.enter_context(open(trace_path, "w")) if trace_path else None
            trace = (lambda r: trace_file.write(json.dumps(r) + "\n")) if trace_file else None
            for chunk, frames in self.stream(prompts, seeds, num_frames, memory, trace):
                for writer, video in zip(writers, frames, strict=True):
                    writer.write(video)
                if trace_file:
                    trace_file.flush()
                frames_done += frames.shape[1]
                elapsed = time.perf_counter() - began
                first_frame_s = first_frame_s or elapsed
                if progress:
                    progress(chunk.index + 1, total_chunks, frames_done / elapsed)
        elapsed = time.perf_counter() - began
        return {"seconds": elapsed, "video_frames": frames_done, "fps": frames_done / elapsed,
                "first_frame_seconds": first_frame_s, "latent_frames": num_frames, "memory": memory}
