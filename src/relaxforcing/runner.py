"""The job runner: one batch of videos from prompts to finished mp4 files, with snapshots, resume and stops."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relaxforcing.interrupts import Interrupted
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import StartFrames, VideoPipeline
from relaxforcing.resume import Snapshots, check_job, reopen_outputs, restore
from relaxforcing.snapshot import Snapshot
from relaxforcing.video import VideoWriter


class Stopped(Interrupted):
    """A batch stopped on request after a whole chunk; its state (if saved) continues it."""

    def __init__(self, signal_name: str, chunks_done: int, total_chunks: int, state_dir: Path | None,
                 partial_videos: list[Path]):
        super().__init__(f"interrupted ({signal_name}) after chunk {chunks_done} of {total_chunks}", signal_name)
        self.chunks_done, self.total_chunks = chunks_done, total_chunks
        self.state_dir, self.partial_videos = state_dir, partial_videos


@dataclass
class GenerationStats:
    """What :func:`generate_videos` measured (a resumed run counts only the frames it made)."""

    seconds: float
    video_frames: int
    """Frames per video made by this call."""
    fps: float
    first_frame_seconds: float | None
    latent_frames: int
    memory: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def generate_videos(
    pipe: VideoPipeline,
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
    overlap: bool | None = None,
    start: StartFrames | None = None,
    prefix: Callable[[], Iterable[np.ndarray]] | None = None,
) -> GenerationStats:
    """Generate one video per (prompt, seed) as one batch and append frames to ``outputs`` as they are decoded.

    Args:
        progress: called with ``(done_chunks, total_chunks, video_frames_per_second)``.
        crf: H.264 quality (0 = lossless).
        snapshots: save the stream's state there every ``snapshots.every`` chunks and when stopped.
        resume: a snapshot of this same job to continue from (bitwise the same frames).
        stop_requested: polled after each chunk; a non-empty answer (e.g. ``"SIGTERM"``) ends the job after that
            chunk: the state is saved (with ``snapshots``), the partial videos are finalised, and :class:`Stopped`
            is raised.
        overlap: decode and write each chunk on a thread of its own while the next chunk is made (default: when the
            model runs on CUDA); the frames are the same either way.
        start: what the videos start from (``pipe.start_from``): an image is their first frame; a clip's context is
            committed first and decoded (for the decoder's causal state) but not written, the new frames follow it.
        prefix: frames ``[H, W, 3]`` written before the stream's (the clip being continued), on a fresh start only.
    """
    if not (len(prompts) == len(seeds) == len(outputs)):
        raise ValueError(f"{len(prompts)} prompts, {len(seeds)} seeds and {len(outputs)} outputs must match")
    num_frames = pipe.latent_frames(seconds)
    job = {"prompts": list(prompts), "seeds": [int(s) for s in seeds], "outputs": [str(p) for p in outputs],
           "memory": memory, "latent_frames": num_frames, "model": pipe.name, "fingerprint": pipe.fingerprint()}
    if start is not None:
        job["start"] = start.describe()
    if resume is not None:
        check_job(resume, job)
    session = pipe.session(prompts, seeds, num_frames, memory, start=start)
    hidden = start.given_frames if start is not None and start.continues else 0  # latents never written
    session.record_latents = snapshots is not None and snapshots.replays(session)
    decoder = pipe.codec.chunk_decoder()
    writer_options = {"fps": pipe.fps, "upscale": pipe.upscale, "crf": crf}
    began = time.perf_counter()
    first_frame_s = None
    with ExitStack() as stack:
        if resume is not None:
            restore(resume, session, decoder)
            writers, trace_file = reopen_outputs(resume, outputs, trace_path, stack, **writer_options)
        else:
            writers = [stack.enter_context(VideoWriter(p, **writer_options)) for p in outputs]
            trace_file = stack.enter_context(open(trace_path, "w")) if trace_path else None
            for frame in prefix() if prefix is not None else ():
                for writer in writers:
                    writer.write(frame[None])
        overlap = pipe.model.patch_embedding.weight.is_cuda if overlap is None else overlap
        output = stack.enter_context(VideoOutput(decoder, writers, overlap=overlap))
        for chunk in session:
            if chunk.start < hidden:  # the clip's context: warms the decoder, written already as the clip itself
                output.prime(chunk)
                if trace_file:
                    trace_file.writelines(json.dumps(record) + "\n" for record in chunk.trace)
                continue
            output.submit(chunk)
            if first_frame_s is None:
                output.wait()
                first_frame_s = output.first_frame_at - began
            if trace_file:
                trace_file.writelines(json.dumps(record) + "\n" for record in chunk.trace)
                trace_file.flush()
            if progress:
                progress(session.index, session.total_chunks, output.frames_out / (time.perf_counter() - began))
            if session.done:
                break
            signal = stop_requested() if stop_requested else None
            if snapshots is not None and (signal or snapshots.due(session.index)):  # of every chunk made so far
                snapshots.save(job, session, decoder, output.wait(), writers, trace_file)
            if signal:
                output.wait()
                raise Stopped(signal, session.index, session.total_chunks,
                              snapshots.directory if snapshots else None, [w.partial_path for w in writers])
        output.wait()
    elapsed = time.perf_counter() - began
    return GenerationStats(seconds=elapsed, video_frames=output.frames_out, fps=output.frames_out / elapsed,
                           first_frame_seconds=first_frame_s, latent_frames=num_frames, memory=memory)
