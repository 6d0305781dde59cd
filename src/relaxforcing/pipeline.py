"""End-to-end generation: prompts -> text encoder -> streaming sampler + memory -> codec -> mp4 writer."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import torch

from relaxforcing.memory import build_policy
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import Chunk, FlowSchedule, StreamSampler, StreamState
from relaxforcing.snapshot import Snapshot, save_snapshot
from relaxforcing.video import VideoWriter


class ChunkDecoder(Protocol):
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, f, h, w]`` latents -> uint8 frames ``[B, T, H, W, 3]``, carrying state across calls."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state carried across calls, as tensors (for a snapshot)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
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
        if not (seconds > 0 and np.isfinite(seconds)):
            raise ValueError(f"--seconds must be a positive number, got {seconds}")
        chunk = self.model.config.chunk_frames
        frames = int(np.ceil(seconds * self.fps / self.frames_per_latent))
        return int(np.ceil(frames / chunk) * chunk)

    def sampler(self, memory: str) -> StreamSampler:
        return StreamSampler(self.model, build_policy(memory, self.model.config.chunk_frames), self.schedule)

    def fingerprint(self) -> str:
        """A short digest of the model's sizes and some of its weights (to refuse resuming with another model)."""
        digest = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True).encode())
        for weight in (self.model.patch_embedding.weight, self.model.head.head.weight):
            digest.update(weight.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    def stream(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_frames: int | None,
        memory: str = "relax",
        trace: Callable[[dict], None] | None = None,
        state: StreamState | None = None,
        decoder: ChunkDecoder | None = None,
    ) -> Iterator[tuple[Chunk, np.ndarray]]:
        """Yield each finished chunk with its decoded frames ``[B, T, H, W, 3]`` uint8.

        ``state`` and ``decoder`` continue a stopped stream (both are updated in place); default: fresh ones.
        """
        sampler = self.sampler(memory)
        context = self.encode_text(list(prompts))
        decoder = decoder or self.codec.stream()
        for chunk in sampler.stream(context, seeds, self.latent_hw, num_frames=num_frames, trace=trace, state=state):
            chunk.check_finite()
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
        *,
        crf: int = 18,
        snapshots: Snapshots | None = None,
        resume: Snapshot | None = None,
        stop_requested: Callable[[], str | None] | None = None,
    ) -> dict:
        """Generate one video per (prompt, seed) and append frames to ``outputs`` as they are decoded.

        Args:
            progress: called with ``(done_chunks, total_chunks, video_frames_per_second)``.
            crf: H.264 quality (0 = lossless).
            snapshots: save the stream's state there every ``snapshots.every`` chunks and when stopped.
            resume: a snapshot of this same job to continue from (bitwise the same frames).
            stop_requested: polled after each chunk; a non-empty answer (e.g. ``"SIGTERM"``) ends the job after
                that chunk: the state is saved (with ``snapshots``), the partial videos are finalised, and
                :class:`Interrupted` is raised.

        Returns timing statistics of this call (a resumed run counts only the frames it made).
        """
        if not (len(prompts) == len(seeds) == len(outputs)):
            raise ValueError(f"{len(prompts)} prompts, {len(seeds)} seeds and {len(outputs)} outputs must match")
        num_frames = self.latent_frames(seconds)
        total_chunks = num_frames // self.model.config.chunk_frames
        job = {"prompts": list(prompts), "seeds": [int(s) for s in seeds], "outputs": [str(p) for p in outputs],
               "memory": memory, "latent_frames": num_frames, "model": self.name, "fingerprint": self.fingerprint()}
        state = self.sampler(memory).new_state(seeds, self.latent_hw)
        decoder = self.codec.stream()
        began = time.perf_counter()
        first_frame_s = None
        frames_done = 0
        with ExitStack() as stack:
            keep_latents = snapshots is not None and snapshots.replays(state)
            history: list[torch.Tensor] = []  # clean latents of every chunk, on the host, for a replay snapshot
            if resume is not None:
                writers, trace_file = self._restore(resume, job, state, decoder, outputs, trace_path, crf, stack)
                history = [resume.tensors["latents"]] if "latents" in resume.tensors else []
            else:
                writers = [stack.enter_context(VideoWriter(p, fps=self.fps, upscale=self.upscale, crf=crf))
                           for p in outputs]
                trace_file = stack.enter_context(open(trace_path, "w")) if trace_path else None
            trace = (lambda r: trace_file.write(json.dumps(r) + "\n")) if trace_file else None
            for chunk, frames in self.stream(prompts, seeds, num_frames, memory, trace, state, decoder):
                if keep_latents:
                    history.append(chunk.latents.cpu())
                for writer, video in zip(writers, frames, strict=True):
                    writer.write(video)
                if trace_file:
                    trace_file.flush()
                frames_done += frames.shape[1]
                elapsed = time.perf_counter() - began
                first_frame_s = first_frame_s or elapsed
                if progress:
                    progress(state.chunk_index, total_chunks, frames_done / elapsed)
                if state.chunk_index == total_chunks:
                    break
                signal = stop_requested() if stop_requested else None
                if snapshots is not None and (signal or snapshots.due(state.chunk_index)):
                    snapshots.save(job, state, decoder, frames, writers, trace_file, history)
                if signal:
                    raise Interrupted(signal, state.chunk_index, total_chunks,
                                      snapshots.directory if snapshots else None, [w.partial_path for w in writers])
        elapsed = time.perf_counter() - began
        return {"seconds": elapsed, "video_frames": frames_done, "fps": frames_done / elapsed,
                "first_frame_seconds": first_frame_s, "latent_frames": num_frames, "memory": memory}

    def _restore(self, snapshot: Snapshot, job: dict, state: StreamState, decoder: ChunkDecoder,
                 outputs: Sequence[Path], trace_path: Path | None, crf: int, stack: ExitStack
                 ) -> tuple[list[VideoWriter], IO | None]:
        """Load ``snapshot`` into ``state`` and ``decoder``; reopen the partial videos and trace (closed by
        ``stack``) where it left them."""
        saved = snapshot.meta.get("job", {})
        for key, value in job.items():
            if saved.get(key) != value:
                raise ValueError(f"the state in {snapshot.directory} is for another job: its {key} is "
                                 f"{saved.get(key)!r}, this run's is {value!r}")
        if "latents" in snapshot.tensors:  # store and decoder state were left out: rebuild both from the latents
            sampler = self.sampler(job["memory"])
            latents = snapshot.tensors["latents"]
            cross_kv = self.model.encode_context(self.encode_text(job["prompts"]).to(sampler.device))
            sampler.replay(state.store, cross_kv, latents, self.latent_hw)
            for chunk in latents.split(self.model.config.chunk_frames, dim=2):  # the same chunks as generation fed
                decoder.decode(chunk.to(sampler.device))
        else:
            decoder.load_state_dict(snapshot.section("decoder"))
        state.restore(snapshot.section("stream"), snapshot.meta["stream"])
        last = snapshot.tensors["last_frames"].numpy()  # [B, T, H, W, 3]: re-encoded, as the file may lack some
        writers = []
        for path, frames_written, video in zip(outputs, snapshot.meta["frames_written"], last, strict=True):
            writer = stack.enter_context(VideoWriter.resume(path, frames_written - len(video), fps=self.fps,
                                                            upscale=self.upscale, crf=crf))
            writer.write(video)
            writers.append(writer)
        trace_file = None
        if trace_path is not None:
            keep = int(snapshot.meta.get("trace_bytes", 0))
            if keep and (not trace_path.is_file() or trace_path.stat().st_size < keep):
                raise ValueError(f"cannot resume: the trace {trace_path} is shorter than when the state was saved")
            trace_file = stack.enter_context(open(trace_path, "a"))
            trace_file.truncate(keep)
            trace_file.seek(keep)
        return writers, trace_file


class Interrupted(Exception):
    """Generation stopped on request after a whole chunk; the state (if saved) continues it."""

    def __init__(self, signal: str, chunks_done: int, total_chunks: int, state_dir: Path | None,
                 partial_videos: list[Path]):
        super().__init__(f"interrupted ({signal}) after chunk {chunks_done} of {total_chunks}")
        self.signal, self.chunks_done, self.total_chunks = signal, chunks_done, total_chunks
        self.state_dir, self.partial_videos = state_dir, partial_videos


@dataclass
class Snapshots:
    """Where and how often :meth:`VideoPipeline.generate` saves its state; ``extra`` rides along (CLI settings)."""

    directory: Path
    every: int = 10
    """Chunks between snapshots; 0 saves only when stopped."""
    extra: dict = field(default_factory=dict)
    store_limit_gb: float = 1.0
    """A frame store larger than this is not saved, nor the decoder's state: the clean latents are, and resuming
    replays the clean passes (a fifth of the DiT work done so far) and the decoding to rebuild both bit for bit.
    Wan 1.3B at 832x480 under relax holds 17 GB of keys/values and a 1.9 GB VAE cache, against 0.4 MB of latents
    per frame."""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"--snapshot-every must be >= 0 chunks, got {self.every}")

    def due(self, chunks_done: int) -> bool:
        return self.every > 0 and chunks_done % self.every == 0

    def replays(self, state: StreamState) -> bool:
        """Whether this stream's snapshots hold clean latents (to replay) instead of its frame store."""
        return state.store.nbytes() > self.store_limit_gb * 1e9

    def save(self, job: dict, state: StreamState, decoder: ChunkDecoder, last_frames: np.ndarray,
             writers: Sequence[VideoWriter], trace_file: IO | None, history: Sequence[torch.Tensor]) -> None:
        """Snapshot after a chunk: durable video and trace first, then the state that points into them."""
        for writer in writers:
            writer.sync()
        trace_bytes = 0
        if trace_file is not None:
            trace_file.flush()
            os.fsync(trace_file.fileno())
            trace_bytes = trace_file.tell()
        with_store = not self.replays(state)
        tensors = {f"stream.{k}": v for k, v in state.tensors(with_store).items()}
        if with_store:
            tensors.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
        else:
            tensors["latents"] = torch.cat(list(history), dim=2)  # [B, C, frames committed, h, w]
            if tensors["latents"].shape[2] != state.store.num_frames:
                raise ValueError(f"{tensors['latents'].shape[2]} clean latents kept for {state.store.num_frames} "
                                 "committed frames: cannot snapshot by replay")
        tensors["last_frames"] = torch.from_numpy(np.ascontiguousarray(last_frames))
        meta = {"job": job, "chunk_index": state.chunk_index, "stream": state.meta(),
                "frames_written": [w.frames_written for w in writers], "trace_bytes": trace_bytes, **self.extra}
        save_snapshot(self.directory, meta, tensors)
