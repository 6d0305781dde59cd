"""VideoOutput: the one decode-and-write consumer of a stream's chunks, optionally overlapped with generation."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch

from relaxforcing.codecs.base import ChunkDecoder
from relaxforcing.sampling import Chunk
from relaxforcing.video import VideoWriter


class VideoOutput:
    """Decodes each chunk of one stream (batch) and appends sample ``b``'s frames to ``writers[b]``.

    Chunks must arrive in order: the decoder carries its causal state from one to the next. With no writers the
    frames are only returned (the viewer, reports).

    With ``overlap``, :meth:`submit` hands the chunk to a decode thread and returns at once, so the caller makes the
    next chunk while this one is decoded (on CUDA on the device's decode stream, which waits for the chunk's latents,
    not for its clean pass) and written; chunks are still decoded and written one at a time, in order, with the same
    operations, so the frames are the same. The host never waits for the device in :meth:`submit`: a chunk's NaN/Inf
    check runs on the decode thread too, and its error is raised by the next :meth:`submit` or :meth:`wait`. Use it
    as a context manager (or call :meth:`close`) so the last chunk is finished.

    The first chunk it outputs is decoded in two pieces, its first latent frame's frames first, so the first frame
    is written without waiting for the rest of the chunk (streaming decoders give the same frames either way).
    """

    def __init__(self, decoder: ChunkDecoder, writers: Sequence[VideoWriter] = (), overlap: bool = False):
        self.decoder = decoder
        self.writers = list(writers)
        self.frames_out = 0
        """Video frames per sample decoded so far."""
        self.decode_seconds: list[float] = []
        """Wall time of each chunk's decode (device work included)."""
        self.first_frame_at: float | None = None
        """``time.perf_counter()`` when the first frames were decoded to the host (None before)."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="relaxforcing-decode") if overlap else None
        self._stream: torch.cuda.Stream | None = None
        self._last: Future | None = None
        self._error: Exception | None = None
        """What made a chunk fail (overlapped); nothing after it is decoded or written."""

    def decode(self, chunk: Chunk) -> np.ndarray:
        """The chunk's frames ``[B, T, H, W, 3]`` uint8 on the host; FloatingPointError for NaN/Inf latents."""
        chunk.check_finite()
        return _joined(list(self.pieces(chunk.latents)))

    def pieces(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        """A chunk's frames ``[B, t, H, W, 3]`` uint8 on the host, in order, as they are decoded: the first chunk
        this output decodes in two pieces (its first latent frame, then the rest), later chunks whole."""
        first = self.frames_out == 0 and latents.shape[2] > 1
        seconds = 0.0
        for part in (latents[:, :, :1], latents[:, :, 1:]) if first else (latents,):
            began = time.perf_counter()
            frames = self.decoder.decode(part).cpu().numpy()
            seconds += time.perf_counter() - began
            if self.first_frame_at is None:
                self.first_frame_at = time.perf_counter()
            self.frames_out += frames.shape[1]
            yield frames
        self.decode_seconds.append(seconds)

    def prime(self, chunk: Chunk) -> None:
        """Decode ``chunk`` only to carry the decoder's causal state forward (a continued clip's context, whose frames
        are written as the clip itself): nothing is written, counted or returned. In order after earlier chunks."""
        self.wait()
        self.decoder.decode(chunk.latents)

    def write(self, frames: np.ndarray) -> None:
        """Append decoded frames ``[B, T, H, W, 3]`` to the writers (encoded on each writer's own thread)."""
        if not self.writers:  # frames only returned
            return
        for writer, video in zip(self.writers, frames, strict=True):
            writer.write(video)

    def __call__(self, chunk: Chunk) -> np.ndarray:
        """Decode ``chunk``, write its frames, and return them (after any chunk submitted before it)."""
        self.submit(chunk)
        return self.wait()

    def submit(self, chunk: Chunk) -> Future:
        """Decode and write ``chunk`` after the chunks before it; the future holds its frames. Without overlap the
        work is done before this returns, and a NaN/Inf chunk raises here; with overlap, an earlier chunk's error is
        raised here. A chunk that fails is never written, nor is anything after it."""
        if self._error is not None:
            raise self._error
        if self._pool is None:
            future: Future = Future()
            future.set_result(self._decode_and_write(chunk, None))
        else:
            ready = None
            if chunk.latents.is_cuda:  # the decode stream starts once the chunk's latents are made
                ready = chunk.ready
                if ready is None:
                    ready = torch.cuda.Event()
                    ready.record()
                if self._stream is None:
                    self._stream = decode_stream(chunk.latents.device)
                chunk.latents.record_stream(self._stream)  # not reused by the allocator until decoded
            future = self._pool.submit(self._decode_and_write, chunk, ready)
        self._last = future
        return future

    def _decode_and_write(self, chunk: Chunk, ready: torch.cuda.Event | None) -> np.ndarray:
        if self._error is not None:  # never write a chunk after one that failed: the video would have a gap
            reason = " ".join(str(self._error).split()) or type(self._error).__name__
            raise RuntimeError(f"an earlier chunk failed to decode ({reason})")
        try:
            with torch.cuda.stream(self._stream) if ready is not None else nullcontext():
                if ready is not None:
                    self._stream.wait_event(ready)
                chunk.check_finite()
                pieces = []
                for frames in self.pieces(chunk.latents):
                    self.write(frames)
                    pieces.append(frames)
        except Exception as error:
            self._error = error
            raise
        return _joined(pieces)

    def wait(self) -> np.ndarray | None:
        """Frames of the last submitted chunk, once it and every chunk before it are decoded and written (None
        before the first); re-raises what went wrong in the decode thread."""
        return None if self._last is None else self._last.result()

    def close(self) -> None:
        """Finish the submitted chunks and stop the decode thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.wait()

    def __enter__(self) -> VideoOutput:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    """One chunk's frames from its pieces, along time."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)


@functools.cache
def decode_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream every overlapped decode on ``device`` runs on, made once per process.

    Its priority is high, so a chunk's decode is not held back by the next chunk's DiT kernels (the first frame comes
    sooner; the GPU's total work is the same). One stream for every output keeps the caching allocator's blocks for
    decoding (kept per stream) warm from one video to the next, instead of allocating them again for each.
    """
    return torch.cuda.Stream(device, priority=-1)
