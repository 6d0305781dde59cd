"""Streaming mp4 writer: frames are appended as they are made, and a partial file stays playable."""

from __future__ import annotations

import errno
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def check_crf(crf: int) -> None:
    """H.264 quality must be 0 (lossless) .. 51."""
    if not 0 <= crf <= 51:
        raise ValueError(f"--crf must be in 0..51 (0 = lossless), got {crf}")


def partial_path(path: Path) -> Path:
    """Where the video at ``path`` lives while it is being written: ``NAME.part.mp4``."""
    return path.with_name(path.stem + ".part" + path.suffix)


class VideoWriter:
    """H.264 in fragmented mp4 with one fragment per frame: each frame is on disk once the next one is written.

    Frames go to ``NAME.part.mp4``, renamed to ``NAME.mp4`` only when the writer closes without an error, so an
    interrupted video stays playable under its ``.part`` name and a rerun does not mistake it for a finished one.
    ``write`` takes uint8 frames ``[T, H, W, 3]``; ``upscale`` repeats pixels (for tiny toy videos); ``crf`` 0 is
    lossless. No B-frames and no lookahead (``zerolatency``), so a frame's packet leaves the encoder at once.

    With ``background`` (default), encoding runs on a thread of its own, so the caller can go on (e.g. queue the next
    chunk on the GPU) meanwhile; an encoding error is raised by the next ``write``, ``flush``, ``sync`` or ``close``.
    """

    def __init__(self, path: Path | str, fps: int = 16, upscale: int = 1, crf: int = 18, background: bool = True):
        self.path = Path(path)
        self.partial_path = partial_path(self.path)
        if not self.path.parent.is_dir():
            raise ValueError(f"output folder {self.path.parent} does not exist")
        check_crf(crf)
        self.fps, self.upscale, self.crf = fps, upscale, crf
        self.frames_written = 0
        """Frames encoded so far (after :meth:`flush`: every frame given to :meth:`write`)."""
        self._whole_fragments_bytes = 0
        self._container = None
        self._stream = None
        self._queue: queue.Queue[np.ndarray | None] | None = queue.Queue(maxsize=2) if background else None
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    def _open(self, height: int, width: int, path: Path | None = None) -> None:
        options = {"movflags": "frag_keyframe+frag_every_frame+empty_moov+default_base_moof", "flush_packets": "1"}
        target = path or self.partial_path
        try:
            self._container = av.open(str(target), "w", format="mp4", options=options)
        except OSError as error:
            raise ValueError(f"cannot write {target}: {error.strerror or error}") from None
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(self.fps), "crf": str(self.crf), "preset": "veryfast", "tune": "zerolatency"}
        self._stream = stream

    @classmethod
    def resume(cls, path: Path | str, keep_frames: int, fps: int = 16, upscale: int = 1, crf: int = 18
               ) -> VideoWriter:
        """Continue an interrupted ``NAME.part.mp4`` after its first ``keep_frames`` frames.

        Those frames are copied as they are (no re-encoding); later ones, if any, are dropped; the next
        :meth:`write` goes to an encoder that has seen none of them, so it starts on a keyframe. With ``crf=0``
        the result decodes to exactly the frames an uninterrupted writer would have produced.
        """
        writer = cls(path, fps=fps, upscale=upscale, crf=crf)
        if keep_frames == 0:
            writer.partial_path.unlink(missing_ok=True)
            return writer
        if not writer.partial_path.is_file():
            raise ValueError(f"cannot resume: the partial video {writer.partial_path} is missing")
        staging = writer.partial_path.with_name(writer.partial_path.name + ".resume")
        try:
            source = av.open(str(writer.partial_path))
        except av.FFmpegError as error:
            raise ValueError(f"cannot resume: {writer.partial_path} is unreadable ({error})") from None
        with source:
            video = source.streams.video[0]
            writer._open(video.codec_context.height, video.codec_context.width, staging)
            writer._container.start_encoding()
            # mp4 stores length-prefixed NAL units; the muxer expects what the encoder gives (Annex B).
            to_annex_b = BitStreamFilterContext("h264_mp4toannexb", video)
            try:
                for packet in source.demux(video):
                    if writer.frames_written == keep_frames:
                        break
                    if packet.dts is None:
                        continue
                    for converted in to_annex_b.filter(packet):
                        converted.stream = writer._stream
                        writer._container.mux(converted)
                    writer.frames_written += 1
            except av.FFmpegError:  # a fragment cut short by the crash: what came before it is still usable
                pass
        if writer.frames_written < keep_frames:
            writer._container.close()
            staging.unlink()
            raise ValueError(f"cannot resume: {writer.partial_path} holds {writer.frames_written} frames, the saved "
                             f"state expects {keep_frames}")
        os.replace(staging, writer.partial_path)  # the open container keeps writing to the renamed file
        writer._whole_fragments_bytes = writer.partial_path.stat().st_size  # a disk-full cut never goes below this
        return writer

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames ``[T, H, W, 3]`` (handed to the encoder thread, or encoded here)."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        h, w = frames.shape[1] * self.upscale, frames.shape[2] * self.upscale
        if h % 2 or w % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
        if self._queue is None:
            self._encode(frames)
            return
        self._raise_worker_error()
        if self._worker is None:
            self._worker = threading.Thread(target=self._encode_queued, name=f"mp4 {self.path.name}", daemon=True)
            self._worker.start()
        self._queue.put(frames)

    def flush(self) -> None:
        """Wait until every frame given to :meth:`write` has been encoded and muxed."""
        if self._queue is not None:
            self._queue.join()
        self._raise_worker_error()

    def sync(self) -> None:
        """Make every frame written so far durable (but the last, which waits for the next fragment)."""
        self.flush()
        if self.partial_path.exists():
            fd = os.open(self.partial_path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _encode_queued(self) -> None:
        while (frames := self._queue.get()) is not None:
            try:
                if self._error is None:  # after an error the rest is dropped; the error waits for the caller
                    self._encode(frames)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                self._error = error
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _encode(self, frames: np.ndarray) -> None:
        if self.upscale > 1:
            frames = frames.repeat(self.upscale, axis=1).repeat(self.upscale, axis=2)
        if self._container is None:
            self._open(*frames.shape[1:3])
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")
            picture.pts, picture.time_base = self.frames_written, Fraction(1, self.fps)
            try:
                for packet in self._stream.encode(picture):
                    self._container.mux(packet)
            except OSError as error:
                if error.errno not in DISK_FULL:
                    raise
                self._cut_to_whole_fragments()
                raise OSError(error.errno, f"disk full (or over the file size limit) writing {self.partial_path}; "
                                           f"its first {max(self.frames_written - 1, 0)} frames are kept, playable"
                              ) from None
            self.frames_written += 1
            # Muxing frame k wrote frame k-1's fragment, whole: the file up to here is always playable.
            self._whole_fragments_bytes = self.partial_path.stat().st_size

    def _cut_to_whole_fragments(self) -> None:
        """After a failed write, drop the half-written fragment so that every byte left decodes."""
        self._container = None  # cannot be flushed or finalised any more: the disk is full
        with open(self.partial_path, "r+b") as file:
            file.truncate(self._whole_fragments_bytes)

    def close(self, complete: bool = True) -> None:
        """Flush and finalise the file; rename it to its final name when ``complete``.

        An incomplete close never raises: it runs while another error is on its way, and the frames already on
        disk stay playable whatever the flush does.
        """
        if self._worker is not None:  # encode what is queued, then stop the thread
            self._queue.put(None)
            self._worker.join()
            self._worker = None
        if self._error is not None and complete:
            raise self._error
        if self._container is not None:
            container, self._container = self._container, None
            try:
                for packet in self._stream.encode():
                    container.mux(packet)
                container.close()
            except (OSError, av.FFmpegError):
                if complete:
                    raise
            if complete:
                self.partial_path.replace(self.path)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(complete=kind is None)


