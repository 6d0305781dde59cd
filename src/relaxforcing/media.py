"""Reading the user's images and videos for image-to-video and video extension: RGB uint8 frames fitted to the
model's frame size and rate, every bad input a one-line ValueError.

Size rule: a picture is scaled (keeping its aspect ratio) until it covers the model's frame, then centre-cropped
(area averaging when shrinking, bicubic when enlarging). Rate rule: a clip at another frame rate is resampled to
the model's by taking, for each model frame time, the nearest earlier-or-equal source frame.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

MAX_IMAGE_PIXELS = 100_000_000
"""Largest picture read (100 megapixels, e.g. 10000x10000): larger ones are refused before they are decoded."""
MAX_FPS = 1000.0


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ValueError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes)")


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame of any pixel format -> RGB uint8 ``[H, W, 3]``; alpha is composited over black."""
    if any(c.is_alpha for c in frame.format.components):
        rgba = frame.to_ndarray(format="rgba").astype(np.float32)
        return (rgba[..., :3] * (rgba[..., 3:] / 255.0)).round().astype(np.uint8)
    return frame.to_ndarray(format="rgb24")


def read_image(source: Path | str | bytes, label: str = "--image") -> np.ndarray:
    """The picture in a file or in ``bytes`` (PNG, JPEG, WebP, BMP, TIFF, ...; grayscale and alpha are made RGB)
    -> ``[H, W, 3]``; errors name it as ``label`` (and the file)."""
    if isinstance(source, bytes):
        if not source:
            raise ValueError(f"{label} is empty (0 bytes)")
        path, opened = "", io.BytesIO(source)
    else:
        path = Path(source)
        _check_file(path, label)
        opened = str(path)
    label = f"{label} {path}" if path else label
    try:
        with av.open(opened) as container:
            if not container.streams.video:
                raise ValueError(f"{label} holds no picture")
            stream = container.streams.video[0]
            if stream.width * stream.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{label} is {stream.width}x{stream.height}, over the "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel limit; shrink it first")
            frame = next(container.decode(stream), None)
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ValueError(f"{label} is not a readable picture ({_reason(error)})") from None
    if frame is None or frame.width == 0 or frame.height == 0:
        raise ValueError(f"{label} is not a readable picture (no frame decodes)")
    return _rgb(frame)


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> ``[h, w, 3]`` for ``size = (h, w)``: scaled to cover, centre-cropped."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be RGB uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    scale = max(h / frame.shape[0], w / frame.shape[1])
    sh, sw = max(h, round(frame.shape[0] * scale)), max(w, round(frame.shape[1] * scale))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(frame, (sw, sh), interpolation=method)
    top, left = (sh - h) // 2, (sw - w) // 2
    return np.ascontiguousarray(scaled[top:top + h, left:left + w])


@dataclass(frozen=True)
class Clip:
    """A user's video, read at the model's frame size and rate."""

    path: Path
    fps: float
    """The file's own frame rate."""
    width: int
    height: int

    def frames(self, size: tuple[int, int], fps: float) -> Iterator[np.ndarray]:
        """Every frame resampled to ``fps`` and fitted to ``size`` ``(h, w)``: RGB uint8 ``[h, w, 3]``."""
        step = self.fps / fps
        wanted = 0  # next output frame, taken at source index floor(wanted * step)
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    while math.floor(wanted * step + 1e-9) <= i:
                        yield fit_frame(_rgb(frame), size)
                        wanted += 1
        except av.FFmpegError as error:
            raise ValueError(f"--extend {self.path} cannot be decoded ({_reason(error)})") from None

    def context(self, size: tuple[int, int], fps: float, head: int, tail: int
                ) -> tuple[np.ndarray, np.ndarray, int]:
        """The first ``head`` and last ``tail`` frames (``[n, h, w, 3]`` each, at ``fps`` and ``size``) and the frame
        count, in one pass."""
        first: list[np.ndarray] = []
        last: deque[np.ndarray] = deque(maxlen=max(tail, 1))
        count = 0
        for frame in self.frames(size, fps):
            if len(first) < head:
                first.append(frame)
            last.append(frame)
            count += 1
        if count == 0:
            raise ValueError(f"--extend {self.path} has no frames")
        empty = np.zeros((0, *size, 3), np.uint8)
        return (np.stack(first) if first else empty), (np.stack(list(last)[-tail:]) if tail else empty), count


def open_clip(path: Path | str) -> Clip:
    """Check that ``path`` is a decodable video with a frame rate; frames are read by :meth:`Clip.frames`."""
    path = Path(path)
    _check_file(path, "--extend")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"--extend {path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if stream.width <= 0 or stream.height <= 0:
                raise ValueError(f"--extend {path} is not a readable video (no frame size)")
            if stream.width * stream.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"--extend {path} is {stream.width}x{stream.height}, over the "
                                 f"{MAX_IMAGE_PIXELS // 1_000_000} megapixel limit")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise ValueError(f"--extend {path} is not a readable video ({_reason(error)})") from None
    if rate is None or not 0 < float(rate) <= MAX_FPS:
        raise ValueError(f"--extend {path} states no usable frame rate ({rate}); re-encode it, e.g. "
                         f"ffmpeg -i {path.name} -r 16 fixed.mp4")
    return Clip(path, float(rate), int(stream.width), int(stream.height))


def image_size(path: Path | str) -> tuple[int, int]:
    """``(height, width)`` of an image or video without decoding it (0, 0 when unknown)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return int(stream.height), int(stream.width)
    except (av.FFmpegError, IndexError, OSError, UnicodeDecodeError):
        return 0, 0


def digest(frames: np.ndarray) -> str:
    """A short digest of uint8 frames (to refuse resuming a run whose input changed)."""
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()[:16]


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text or type(error).__name__
