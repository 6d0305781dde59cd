"""VideoOutput: the one decode-and-write consumer of a stream's chunks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from relaxforcing.codecs.base import ChunkDecoder
from relaxforcing.sampling import Chunk
from relaxforcing.video import VideoWriter


class VideoOutput:
    """Decodes each chunk of one stream (batch) and appends sample ``b``'s frames to ``writers[b]``.

    Chunks must arrive in order: the decoder carries its causal state from one to the next. With no writers the
    frames are only returned (the viewer, reports).
    """

    def __init__(self, decoder: ChunkDecoder, writers: Sequence[VideoWriter] = ()):
        self.decoder = decoder
        self.writers = list(writers)
        self.frames_out = 0
        """Video frames per sample decoded so far."""

    def decode(self, chunk: Chunk) -> np.ndarray:
        """The chunk's frames ``[B, T, H, W, 3]`` uint8 on the host; FloatingPointError for NaN/Inf latents."""
        chunk.check_finite()
        frames = self.decoder.decode(chunk.latents).cpu().numpy()
        self.frames_out += frames.shape[1]
        return frames

    def write(self, frames: np.ndarray) -> None:
        """Append decoded frames ``[B, T, H, W, 3]`` to the writers (encoded on each writer's own thread)."""
        for writer, video in zip(self.writers, frames, strict=True):
            writer.write(video)

    def __call__(self, chunk: Chunk) -> np.ndarray:
        """Decode ``chunk``, write its frames, and return them."""
        frames = self.decode(chunk)
        if self.writers:
            self.write(frames)
        return frames
