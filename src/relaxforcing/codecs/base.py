"""What a codec offers the rest of relaxforcing: a streaming decoder per video, its frame arithmetic, and (for codecs
that have an encoder) pixels to latents, which image-to-video and video extension need."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class VAETiles:
    """Spatial tiles for the streaming decode: the latent frame is cut into the fewest near-equal tiles of at most
    ``height`` x ``width`` latent cells; each is decoded with a margin of its neighbours' cells wide enough that its
    own pixels come out as the whole frame's (see `relaxforcing.codecs.wan_vae.VAEChunkDecoder`)."""

    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.height, self.width) < 1:
            raise ValueError(f"VAE tiles must be at least 1x1 latent cells, got {self.height}x{self.width}")

    def layout(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """Latent (top, bottom, left, right) of every tile of an ``h`` x ``w`` latent frame, row by row; they
        partition the frame."""
        return [(t, b, left, r) for t, b in _spans(h, self.height) for left, r in _spans(w, self.width)]


def _spans(size: int, most: int) -> list[tuple[int, int]]:
    """The fewest near-equal consecutive spans of at most ``most`` covering ``0..size``."""
    n = math.ceil(size / most)
    return [(k * size // n, (k + 1) * size // n) for k in range(n)]


AUTO_TILES = VAETiles(36, 36)
"""``--vae-tiles auto`` on a CUDA device with less than :data:`TILE_BELOW_BYTES`: 2 x 3 tiles of 30 x 35 latent
cells at 832x480 (3 x 2 at 480x832), whole frames up to 288x288. Counted live bytes of one steady 3-latent chunk at
832x480 (bf16, on the meta device): caches 1.89 -> 2.15 GB, what a decode adds 2.03 -> 0.42 GB, together 3.92 ->
2.57 GB (2 x 2 tiles: 2.66; 3 x 3: 2.67); the margins cost 17% more convolution work (2 x 2: 12%)."""
TILE_BELOW_BYTES = 16 * 2**30
"""``auto`` tiles only on cards smaller than this: on one H200 tiling cut relax's peak from 9.18 to 7.86 GB but took
the decode from 315 to 529 ms per chunk (e2e 24.1 -> 21.5 FPS; docs/benchmarks.md), a price worth paying only where
the memory is needed."""


def device_memory(device: str | torch.device) -> int | None:
    """Total memory of a CUDA ``device`` in bytes; None for other devices."""
    device = torch.device(device)
    return torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None


def parse_vae_tiles(spec: str, device: str | torch.device) -> VAETiles | None:
    """``--vae-tiles`` for a decoder on ``device``: ``off`` (None), ``auto`` (:data:`AUTO_TILES` on a CUDA device
    with less than :data:`TILE_BELOW_BYTES`, off elsewhere), or ``HxW``: tiles of at most H x W latent cells."""
    text = spec.strip().lower()
    if text in ("auto", "off"):
        memory = device_memory(device) if text == "auto" else None
        return AUTO_TILES if memory is not None and memory < TILE_BELOW_BYTES else None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None:
        raise ValueError(f"--vae-tiles {spec!r}: choose auto, off, or HxW latent cells per tile (e.g. 30x52)")
    return VAETiles(int(match[1]), int(match[2]))
