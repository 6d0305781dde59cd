"""Streaming mp4 reading and writing with PyAV: RGB uint8 frames ``[H, W, 3]`` plus fps."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of one video stream."""

    fps: float
    """Average frame rate of the stream (frames per second)."""
    num_frames: int
    """Frame count stated by the container (0 when it does not say)."""
    height: int
    width: int


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"video file not found: {path}")


def probe_video(path: Path) -> VideoInfo:
    """Reads fps, frame count and size from the container without decoding."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: {err}") from err
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if rate is None:
            raise ValueError(f"video {path} states no frame rate")
        return VideoInfo(float(rate), int(stream.frames), int(stream.height), int(stream.width))


def iter_frames(path: Path, stride: int = 1) -> Iterator[np.ndarray]:
    """Yields every ``stride``-th frame as RGB uint8 ``[H, W, 3]``.

    Skipped frames are decoded (H.264 needs them) but never converted to RGB, which is where most of the
    per-frame cost lies.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    _check_file(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i % stride == 0:
                yield frame.to_ndarray(format="rgb24")


def read_video(path: Path, stride: int = 1) -> tuple[np.ndarray, float]:
    """Reads a whole video: frames ``[T, H, W, 3]`` uint8 and the stream's fps (not divided by ``stride``)."""
    info = probe_video(path)
    frames = list(iter_frames(path, stride))
    if not frames:
        raise ValueError(f"video {path} has no decodable frames")
    return np.stack(frames), info.fps


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Encodes RGB uint8 frames ``[H, W, 3]`` (even H and W) as H.264 yuv420p; returns the frame count."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        stream.height, stream.width = first.shape[:2]
        for frame in itertools.chain([first], it):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            count += 1
        container.mux(stream.encode())
    return count
