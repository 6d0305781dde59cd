"""A generation job: a worker thread that streams each pane's chunks as socket messages and into an mp4."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import secrets
import shutil
import struct
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from relaxforcing.codecs.base import Codec
from relaxforcing.media import open_clip, read_image
from relaxforcing.memory import build_policy
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import StartFrames, VideoPipeline
from relaxforcing.sampling import StreamSession
from relaxforcing.server.decoders import check_decoder, label, offered_decoders
from relaxforcing.video import VideoWriter, partial_path

MAX_PANES = 2
MAX_PROMPT_CHARS = 2000
MAX_RECACHE_FRAMES = 24
"""Latent frames a session keeps for re-encoding after a prompt switch."""
FRAME_HEADER = struct.Struct("<BBHI")
"""Binary frame message header: pane, job sequence number (mod 256), image format, video frame index."""
PNG, JPEG = 0, 1
"""Image formats: small frames (the toy's 64x64) go lossless, as JPEG blocks would show once upscaled."""
PNG_MAX_PIXELS = 128 * 128
JPEG_QUALITY = 90
MAX_IMAGE_BYTES = 8_000_000
"""Largest picture a page may send to start from (its base64 text is a third larger)."""

Outbox = Callable[[dict | bytes], None]
log = logging.getLogger(__name__)


def check_prompt(pipeline: VideoPipeline, prompt: object) -> str:
    """The stripped prompt, after the pipeline's text encoder accepted it; raises ValueError otherwise."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}")
    prompt = prompt.strip()
    pipeline.encode_text([prompt])
    return prompt


def check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}={int(value)} is out of range [{low}, {high}]")
    return int(value)


def check_image(value: object) -> np.ndarray:
    """A picture sent as base64 (or a ``data:image/...;base64,`` URL) -> RGB uint8 ``[H, W, 3]``."""
    if not isinstance(value, str):
        raise ValueError("image must be a base64 string or a data URL")
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 100:
        raise ValueError(f"the image is larger than {MAX_IMAGE_BYTES // 1_000_000} MB")
    try:
        data = base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError, IndexError):
        raise ValueError("the image is not valid base64") from None
    return read_image(data, "the image")


@dataclass(frozen=True)
class JobRequest:
    """What the page asked for: one prompt and seed, one memory policy per pane, the decoder (by name), and what the
    video starts from: a picture (its first frame) or the first pane's video of an earlier job (continued)."""

    prompt: str
    memories: tuple[str, ...]
    seconds: float
    seed: int
    decoder: str
    image: np.ndarray | None = None
    extend: Path | None = None
    """The mp4 to continue."""

    @classmethod
    def parse(cls, message: dict, pipeline: VideoPipeline, max_seconds: float,
              videos: Callable[[str], Path] | None = None, decoders: Mapping[str, Codec] | None = None,
              default_decoder: str | None = None) -> JobRequest:
        """Validate a ``start`` message; raises ValueError naming the bad field. ``videos`` maps a job id to its
        finished first video (for ``extend``); ``decoders`` are those the server offers (default: the pipeline's own
        codec), ``default_decoder`` the one used when the message names none (default: the first)."""
        if decoders is None:
            decoders = offered_decoders(pipeline)[0]
        decoder = check_decoder(message.get("decoder", default_decoder or next(iter(decoders))), decoders)
        prompt = check_prompt(pipeline, message.get("prompt"))
        memories = message.get("memory")
        memories = [memories] if isinstance(memories, str) else memories
        if not isinstance(memories, list) or not all(isinstance(m, str) for m in memories):
            raise ValueError(f"memory must be a policy spec or a list of them, got {memories!r}")
        memories = [m.strip() for m in memories if m.strip()]
        if not 1 <= len(memories) <= MAX_PANES:
            raise ValueError(f"give 1 to {MAX_PANES} memory policies, got {len(memories)}")
        for spec in memories:
            build_policy(spec, pipeline.model.config.chunk_frames)
        seconds = message.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a number, got {seconds!r}")
        if not 0 < seconds <= max_seconds:
            raise ValueError(f"seconds={seconds} is out of range (0, {max_seconds}]")
        seed = check_int("seed", message.get("seed"), 0, 2**63 - 1)
        image = extend = None
        if message.get("image") is not None and message.get("extend") is not None:
            raise ValueError("start from an image or extend a video, not both")
        if message.get("image") is not None:
            image = check_image(message["image"])
        if message.get("extend") is not None:
            if videos is None or not isinstance(message["extend"], str):
                raise ValueError("extend must name an earlier job")
            extend = videos(message["extend"])
            open_clip(extend)
        return cls(prompt, tuple(memories), float(seconds), seed, decoder, image, extend)


class Job:
    """Generates every pane chunk by chunk in its own thread; ``stop()`` ends it at the next chunk boundary.

    Messages go to ``send``: JSON-ready dicts (``started``, ``chunk``, ``switched``, ``error``, ``done``) and, after
    each ``chunk``, one binary message per video frame (``FRAME_HEADER`` + PNG or JPEG). Panes take turns chunk by
    chunk, so two policies advance together. Each pane's video is also written to ``folder/pane{i}.mp4``. Frames
    are decoded by ``codec`` (default: the pipeline's own), the decoder ``request.decoder`` names, with a chunk
    decoder per pane; images and clips to start from are encoded by the pipeline's own codec.
    """

    def __init__(self, pipeline: VideoPipeline, request: JobRequest, folder: Path, send: Outbox, seq: int = 0,
                 codec: Codec | None = None):
        self.id = secrets.token_hex(8)
        self.seq = seq % 256
        self.pipeline = pipeline
        self.request = request
        self.codec = codec if codec is not None else pipeline.codec
        self.folder = folder / self.id
        self.paths = [self.folder / f"pane{i}.mp4" for i in range(len(request.memories))]
        self.send = send
        self.num_frames = pipeline.latent_frames(request.seconds)
        self.total_chunks = self.num_frames // pipeline.model.config.chunk_frames
        self.chunks_done = 0
        """Chunk rounds finished (every pane made the chunk)."""
        self.state = "created"
        """created | running | done | stopped | failed"""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._switch: tuple[str, int] | None = None
        self.thread = threading.Thread(target=self.run, name=f"relaxforcing-job-{self.id}", daemon=True)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "stopped", "failed")

    def start(self) -> None:
        self.state = "running"
        self.thread.start()

    def stop(self) -> None:
        """Ask the worker to stop before its next chunk."""
        self._stop.set()

    def request_switch(self, prompt: str, recache_frames: int) -> None:
        """Switch every pane to ``prompt`` (already validated) at the next chunk boundary."""
        with self._lock:
            self._switch = (prompt, recache_frames)

    def run(self) -> None:
        try:
            self.state = self._generate()
        except (ValueError, RuntimeError, FloatingPointError, OSError) as error:
            self.state = "failed"
            self.send({"type": "error", "job": self.id, "message": " ".join(str(error).split())})
        except Exception as error:  # a worker must never die silently: report, log the traceback
            self.state = "failed"
            log.exception("job %s failed", self.id)
            self.send({"type": "error", "job": self.id, "message": f"internal error: {type(error).__name__}"})
        finally:
            for path in self.paths:  # a failed job's frames so far: finalised as playable, offered for download
                if not path.exists() and partial_path(path).exists():
                    partial_path(path).replace(path)
            self.send({"type": "done", "job": self.id, "seq": self.seq, "state": self.state,
                       "chunks": self.chunks_done, "downloads": [f"/video/{self.id}/{i}.mp4"
                                                                 for i, p in enumerate(self.paths) if p.exists()]})

    def _starts(self) -> list[StartFrames | None]:
        """Per pane, what its stream starts from (a clip's context depends on the pane's policy)."""
        pipe, req = self.pipeline, self.request
        if req.image is not None:
            return [pipe.start_from(image=req.image)] * len(req.memories)
        if req.extend is not None:
            return [pipe.start_from(video=req.extend, memory=memory) for memory in req.memories]
        return [None] * len(req.memories)

    def _generate(self) -> str:
        pipe, req = self.pipeline, self.request
        starts = self._starts()
        sessions = [pipe.session([req.prompt], [req.seed], self.num_frames, memory, keep_latents=MAX_RECACHE_FRAMES,
                                 start=start) for memory, start in zip(req.memories, starts, strict=True)]
        hidden = [s.given_frames if s is not None and s.continues else 0 for s in starts]
        self.total_chunks = max(s.total_chunks for s in sessions)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.send({"type": "started", "job": self.id, "seq": self.seq, "fps": pipe.fps, "upscale": pipe.upscale,
                   "chunk_frames": pipe.model.config.chunk_frames, "frames_per_latent": pipe.frames_per_latent,
                   "latent_frames": self.num_frames, "total_chunks": self.total_chunks, "prompt": req.prompt,
                   "seed": req.seed, "decoder": req.decoder, "decoder_label": label(req.decoder),
                   "panes": [s.sampler.policy.spec() for s in sessions]})
        began = time.perf_counter()
        video_frames = [0] * len(sessions)
        with ExitStack() as stack:
            outputs = [VideoOutput(self.codec.chunk_decoder(), [stack.enter_context(VideoWriter(p, fps=pipe.fps,
                                                                                           upscale=pipe.upscale))])
                       for p in self.paths]
            if req.extend is not None:  # the download holds the clip, then the new frames
                for frame in open_clip(req.extend).frames(pipe.frame_hw, pipe.fps):
                    for output in outputs:
                        output.write(frame[None, None])
            for index in range(self.total_chunks):
                if self._stop.is_set():
                    return "stopped"
                self._apply_switch(sessions, index)
                for pane, (session, output) in enumerate(zip(sessions, outputs, strict=True)):
                    if self._stop.is_set():
                        return "stopped"
                    if session.done:
                        continue
                    tick = time.perf_counter()
                    chunk = session.next_chunk()
                    if chunk.start < hidden[pane]:  # the clip's context: decoded for the decoder's state only
                        output.prime(chunk)
                        continue
                    chunk.check_finite()
                    first, sending = video_frames[pane], 0.0
                    for frames in output.pieces(chunk.latents):  # the first chunk's first frame is sent at once
                        output.write(frames)
                        sent = time.perf_counter()
                        for frame in frames[0]:
                            kind, data = encode_image(frame)
                            self.send(FRAME_HEADER.pack(pane, self.seq, kind, video_frames[pane]) + data)
                            video_frames[pane] += 1
                        sending += time.perf_counter() - sent
                    compute_ms = 1000 * (time.perf_counter() - tick - sending)
                    self.send({"type": "chunk", "job": self.id, "seq": self.seq, "pane": pane, "chunk": chunk.index,
                               "start": chunk.start, "first_frame": first, "frames": video_frames[pane] - first,
                               "compute_ms": round(compute_ms, 1), "decoder": req.decoder,
                               "elapsed_s": round(time.perf_counter() - began, 3),
                               "prompt": session.prompts[0], "trace": chunk.trace[0]})
                self.chunks_done += 1
        return "done"

    def _apply_switch(self, sessions: list[StreamSession], index: int) -> None:
        with self._lock:
            switch, self._switch = self._switch, None
        if switch is None:
            return
        prompt, recache = switch
        for pane, session in enumerate(sessions):
            if session.done:
                continue
            tick = time.perf_counter()
            recached = session.switch_prompt(prompt, recache_frames=recache)
            self.send({"type": "switched", "job": self.id, "pane": pane, "chunk": index,
                       "frame": session.committed_frames, "recached": recached, "prompt": prompt,
                       "ms": round(1000 * (time.perf_counter() - tick), 1)})


class JobBoard:
    """Every job of one server: starts new ones within ``max_jobs`` running, keeps the last ``keep_jobs`` finished
    ones (and their mp4s) for download, deletes older ones. ``decoders`` are the codecs pages may pick by name
    (default: the pipeline's own codec), ``default_decoder`` the one a page gets when it names none (default: the
    first)."""

    def __init__(self, pipeline: VideoPipeline, folder: Path, max_seconds: float, max_jobs: int, keep_jobs: int,
                 decoders: dict[str, Codec] | None = None, default_decoder: str | None = None):
        if not max_seconds > 0 or max_jobs < 1 or keep_jobs < 1:
            raise ValueError(f"max_seconds={max_seconds} must be > 0, max_jobs={max_jobs} and "
                             f"keep_jobs={keep_jobs} >= 1")
        if decoders is None:
            decoders = offered_decoders(pipeline)[0]
        default_decoder = default_decoder or next(iter(decoders), "")
        if default_decoder not in decoders:
            raise ValueError(f"the default decoder {default_decoder!r} is not among the decoders offered "
                             f"({', '.join(decoders)})")
        self.pipeline, self.folder = pipeline, folder
        self.max_seconds, self.max_jobs, self.keep_jobs = max_seconds, max_jobs, keep_jobs
        self.decoders, self.default_decoder = decoders, default_decoder
        self.jobs: dict[str, Job] = {}

    def parse(self, message: dict) -> JobRequest:
        """A ``start`` message checked against this server's limits, decoders and finished videos."""
        return JobRequest.parse(message, self.pipeline, self.max_seconds, self.video, self.decoders,
                                self.default_decoder)

    def start(self, request: JobRequest, send: Outbox, seq: int) -> Job:
        """Start a job for ``request``; raises ValueError when ``max_jobs`` are already running."""
        running = sum(not job.finished for job in self.jobs.values())
        if running >= self.max_jobs:
            raise ValueError(f"the server is busy with {running} other generation(s); try again when one finishes")
        finished = [job for job in self.jobs.values() if job.finished]
        for job in finished[: max(0, len(finished) - self.keep_jobs)]:
            shutil.rmtree(job.folder, ignore_errors=True)
            del self.jobs[job.id]
        job = Job(self.pipeline, request, self.folder, send, seq, self.decoders[request.decoder])
        self.jobs[job.id] = job
        job.start()
        return job

    def video(self, job_id: str) -> Path:
        """The first pane's mp4 of a finished job (to extend); ValueError when there is none."""
        job = self.jobs.get(job_id)
        if job is None or not job.finished or not job.paths[0].exists():
            raise ValueError("there is no finished video to extend; generate one first")
        return job.paths[0]

    def stop_all(self, timeout: float = 30) -> None:
        for job in self.jobs.values():
            job.stop()
        for job in self.jobs.values():
            job.thread.join(timeout)


def encode_image(frame: np.ndarray) -> tuple[int, bytes]:
    """uint8 RGB ``[H, W, 3]`` -> (``PNG`` or ``JPEG``, encoded bytes)."""
    kind = PNG if frame.shape[0] * frame.shape[1] <= PNG_MAX_PIXELS else JPEG
    ext, params = (".png", []) if kind == PNG else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    ok, data = cv2.imencode(ext, np.ascontiguousarray(frame[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"{ext} encoding failed for a frame of shape {list(frame.shape)}")
    return kind, data.tobytes()
