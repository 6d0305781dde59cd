"""Streaming mp4 writer: frames are appended as they are made, and a partial file stays playable."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import av
import numpy as np


class VideoWriter:
    """H.264 in fragmented mp4: each 1-second fragment is on disk once written, so a crash loses at most ~1 s.

    Frames go to ``NAME.part.mp4``, renamed to ``NAME.mp4`` only when the writer closes without an error, so an
    interrupted video stays playable under its ``.part`` name and a rerun does not mistake it for a finished one.
    ``write`` takes uint8 frames ``[T, H, W, 3]``; ``upscale`` repeats pixels (for tiny toy videos).
    """

    def __init__(self, path: Path | str, fps: int = 16, upscale: int = 1, crf: int = 18):
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.stem + ".part" + self.path.suffix)
        if not self.path.parent.is_dir():
            raise ValueError(f"output folder {self.path.parent} does not exist")
        self.fps, self.upscale, self.crf = fps, upscale, crf
        self.frames_written = 0
        self._container = None
        self._stream = None

    def _open(self, height: int, width: int) -> None:
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
        try:
            self._container = av.open(str(self.partial_path), "w", format="mp4", options=options)
        except OSError as error:
            raise ValueError(f"cannot write {self.partial_path}: {error.strerror or error}") from None
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(self.fps), "crf": str(self.crf), "preset": "veryfast", "tune": "zerolatency"}
        self._stream = stream

    def write(self, frames: np.ndarray) -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
        if self.upscale > 1:
            frames = frames.repeat(self.upscale, axis=1).repeat(self.upscale, axis=2)
        if self._container is None:
            h, w = frames.shape[1:3]
            if h % 2 or w % 2:
                raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
            self._open(h, w)
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")):
                self._container.mux(packet)
        self.frames_written += len(frames)

    def close(self, complete: bool = True) -> None:
        """Flush and finalise the file; rename it to its final name when ``complete``."""
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            if complete:
                self.partial_path.replace(self.path)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(complete=kind is None)

