"""What a codec offers the rest of relaxforcing: a streaming decoder per video, its frame arithmetic, and (for codecs
that have an encoder) pixels to latents, which image-to-video and video extension need."""

from __future__ import annotations

from typing import Protocol

import torch


class ChunkDecoder(Protocol):
    """Decodes one video (batch) chunk by chunk, carrying whatever state the codec needs between chunks."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, f, h, w]`` latents -> uint8 frames ``[B, T, H, W, 3]``."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state carried across calls, as tensors (for a snapshot)."""
        ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        ...


class Codec(Protocol):
    def chunk_decoder(self) -> ChunkDecoder:
        """A fresh streaming decoder for one video (batch)."""
        ...

    def video_frames(self, latent_frames: int) -> int:
        """Video frames that ``latent_frames`` latents decode to."""
        ...


class FrameEncoder(Protocol):
    """A codec that also encodes: user frames become the latents a stream starts from."""

    space_ratio: int
    """Pixels per latent cell along each spatial axis."""

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, T, H, W, 3]`` with ``T = video_frames(F)`` -> latents ``[B, C, F, H/s, W/s]`` (float32),
        encoded causally from the first frame: frame 0 alone for the Wan VAE, frames 0..3 for the toy codec."""
        ...

    def video_frames(self, latent_frames: int) -> int:
        ...


def to_signed_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> float32 ``[B, T, 3, H, W]`` in [-1, 1]."""
    if frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 [B, T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1
