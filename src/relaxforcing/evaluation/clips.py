"""VBench-Long fixed-length clipping: ``int(fps) * seconds`` frames per clip, tail clip extended backwards.

Source: ``vbench2_beta_long/utils.py::split_video_into_clips`` (VBench 45e79ec). A video shorter than one clip is
kept whole; otherwise the clips are ``[0, L), [L, 2L), ...`` and a remainder becomes the clip ``[T - L, T)``, which
overlaps the previous one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

CLIP_SECONDS = 2
"""VBench-Long clip length for all seven quality dimensions (``configs/clip_length_mix.yaml``)."""


def clip_length_frames(fps: float, seconds: int = CLIP_SECONDS) -> int:
    """Frames per clip: ``int(fps) * seconds``, fps truncated as VBench-Long's ``get_video_properties`` does."""
    if fps < 1 or seconds < 1:
        raise ValueError(f"need fps >= 1 and seconds >= 1, got fps={fps}, seconds={seconds}")
    return int(fps) * seconds


def clip_spans(num_frames: int, clip_frames: int) -> list[tuple[int, int]]:
    """Half-open frame spans ``[start, stop)`` of the clips of a ``num_frames`` video."""
    if num_frames < 1 or clip_frames < 1:
        raise ValueError(f"need num_frames >= 1 and clip_frames >= 1, got {num_frames}, {clip_frames}")
    if num_frames < clip_frames:
        return [(0, num_frames)]
    spans = [(i * clip_frames, (i + 1) * clip_frames) for i in range(num_frames // clip_frames)]
    if num_frames % clip_frames:
        spans.append((num_frames - clip_frames, num_frames))
    return spans


def iter_clips(frames: Iterable[np.ndarray], clip_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """Streams ``(start, clip [L, H, W, 3])`` following :func:`clip_spans`, holding at most two clips in memory."""
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    buffer: list[np.ndarray] = []
    previous: np.ndarray | None = None
    start = 0
    for frame in frames:
        buffer.append(frame)
        if len(buffer) == clip_frames:
            previous = np.stack(buffer)
            yield start, previous
            start += clip_frames
            buffer = []
    if not buffer:
        return
    if previous is None:  # shorter than one clip: the whole video
        yield 0, np.stack(buffer)
        return
    need = clip_frames - len(buffer)
    yield start - need, np.concatenate([previous[clip_frames - need :], np.stack(buffer)])
