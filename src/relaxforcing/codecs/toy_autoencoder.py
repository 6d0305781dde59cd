"""Learned toy codec with Wan's latent geometry: 4 frames x 4x4 pixels -> 16 channels per latent cell.

Space-to-depth packs each cell into 192 values; a small per-cell MLP autoencoder compresses them to 16 channels,
so the toy DiT sees latents shaped like the Wan VAE's (16 channels, 2x2 patches of 64 values per token, far
below its 256-wide hidden state). Latents are normalised by per-channel mean/std measured after training.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from relaxforcing.codecs.base import to_signed_video
from relaxforcing.codecs.space_to_depth import LATENT_CHANNELS, SPACE_RATIO, SpaceToDepthCodec

TOY_LATENT_CHANNELS = 16


class ToyAutoencoder(nn.Module):
    """Per-cell MLP autoencoder on space-to-depth blocks; ``encode``/``decode`` act on [-1, 1] video."""

    space_ratio = SPACE_RATIO

    def __init__(self, hidden: int = 512, channels: int = TOY_LATENT_CHANNELS):
        super().__init__()
        self.s2d = SpaceToDepthCodec()
        self.encoder = nn.Sequential(nn.Linear(LATENT_CHANNELS, hidden), nn.SiLU(), nn.Linear(hidden, channels))
        self.decoder = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, LATENT_CHANNELS))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def _cells(self, blocks: torch.Tensor, net: nn.Module) -> torch.Tensor:
        return net(blocks.movedim(1, -1)).movedim(-1, 1)

    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, T, 3, H, W]`` in [-1, 1] -> un-normalised latents ``[B, 16, T/4, H/4, W/4]``."""
        return self._cells(self.s2d.encode(video), self.encoder)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Un-normalised latents ``[B, 16, F, h, w]`` -> video ``[B, 4F, 3, 4h, 4w]``."""
        return self.s2d.decode(self._cells(z, self.decoder))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, T, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, 16, T/4, H/4, W/4]``."""
        return (self.encode_raw(video) - self.mean[:, None, None, None]) / self.std[:, None, None, None]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, 16, F, h, w]`` -> video ``[B, 4F, 3, 4h, 4w]`` in about [-1, 1]."""
        return self.decode_raw(latents * self.std[:, None, None, None] + self.mean[:, None, None, None])

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, 4F, H, W, 3]`` -> normalised latents ``[B, 16, F, H/4, W/4]`` (cells are independent:
        each latent frame encodes its own 4 video frames)."""
        return self.encode(to_signed_video(frames).to(self.mean.device))

    def chunk_decoder(self) -> ToyAutoencoderDecoder:
        """A streaming decoder (stateless: cells are independent)."""
        return ToyAutoencoderDecoder(self)

    def video_frames(self, latent_frames: int) -> int:
        return self.s2d.video_frames(latent_frames)


class ToyAutoencoderDecoder:
    """Decodes one latent chunk at a time; cells are independent, so no state is carried."""

    def __init__(self, codec: ToyAutoencoder) -> None:
        self.codec = codec

    @torch.no_grad()
    def decode(self, chunk: torch.Tensor) -> torch.Tensor:
        """Latent chunk ``[B, 16, f, h, w]`` -> uint8 frames ``[B, 4f, 4h, 4w, 3]``."""
        video = self.codec.decode(chunk.to(self.codec.mean.device, torch.float32))
        return ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"the toy codec keeps no decoder state, got {sorted(state)[:4]}")
