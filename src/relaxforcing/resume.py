"""Saving a running generation and continuing it: what a snapshot holds, when it is taken, how it is restored.

A snapshot (``snapshot.py`` writes it atomically) holds the stream session's state, the decoder's state, the last
chunk's frames and how far each video and the trace had been written. A session whose frame store is too big to
save (full-size Wan) saves its clean latents instead: restoring replays the clean passes and the decoding.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch

from relaxforcing.codecs.base import ChunkDecoder
from relaxforcing.sampling import StreamSession
from relaxforcing.snapshot import Snapshot, save_snapshot
from relaxforcing.video import VideoWriter


@dataclass
class Snapshots:
    """Where and how often a generation saves its state; ``extra`` rides along (CLI settings)."""

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

    def replays(self, session: StreamSession) -> bool:
        """Whether this session's snapshots hold clean latents (to replay) instead of its frame store."""
        return session.store.nbytes() > self.store_limit_gb * 1e9

    def save(self, job: dict, session: StreamSession, decoder: ChunkDecoder, last_frames: np.ndarray,
             writers: Sequence[VideoWriter], trace_file: IO | None) -> None:
        """Snapshot after a chunk: durable video and trace first, then the state that points into them."""
        for writer in writers:
            writer.sync()
        trace_bytes = 0
        if trace_file is not None:
            trace_file.flush()
            os.fsync(trace_file.fileno())
            trace_bytes = trace_file.tell()
        with_store = not self.replays(session)
        tensors = {f"stream.{k}": v for k, v in session.state_tensors(with_store).items()}
        if with_store:
            tensors.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
        else:
            tensors["latents"] = session.recorded_latents()  # [B, C, frames committed, h, w]
        tensors["last_frames"] = torch.from_numpy(np.ascontiguousarray(last_frames))
        meta = {"job": job, "chunk_index": session.index, "stream": session.state_meta(),
                "frames_written": [w.frames_written for w in writers], "trace_bytes": trace_bytes, **self.extra}
        save_snapshot(self.directory, meta, tensors)


def check_job(snapshot: Snapshot, job: dict) -> None:
    """Refuse a snapshot taken for other prompts, seeds, outputs, memory, length or model."""
    saved = snapshot.meta.get("job", {})
    for key, value in job.items():
        if saved.get(key) != value:
            raise ValueError(f"the state in {snapshot.directory} is for another job: its {key} is "
                             f"{saved.get(key)!r}, this run's is {value!r}")


def restore(snapshot: Snapshot, session: StreamSession, decoder: ChunkDecoder) -> None:
    """Load ``snapshot`` into a fresh ``session`` and ``decoder``: afterwards both continue bit for bit."""
    if "latents" in snapshot.tensors:  # store and decoder state were left out: rebuild both from the latents
        latents = snapshot.tensors["latents"]
        session.replay(latents)
        for chunk in latents.split(session.sampler.chunk_frames, dim=2):  # the same chunks as generation fed
            decoder.decode(chunk.to(session.sampler.device))
    else:
        decoder.load_state_dict(snapshot.section("decoder"))
    session.restore(snapshot.section("stream"), snapshot.meta["stream"])


def reopen_outputs(snapshot: Snapshot, outputs: Sequence[Path], trace_path: Path | None, stack: ExitStack,
                   **writer_options) -> tuple[list[VideoWriter], IO | None]:
    """The partial videos and trace, reopened where ``snapshot`` left them (closed by ``stack``)."""
    last = snapshot.tensors["last_frames"].numpy()  # [B, T, H, W, 3]: re-encoded, as the file may lack some
    writers = []
    for path, frames_written, video in zip(outputs, snapshot.meta["frames_written"], last, strict=True):
        writer = stack.enter_context(VideoWriter.resume(path, frames_written - len(video), **writer_options))
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
