"""What a codec offers the rest of relaxforcing: a streaming decoder per video and its frame arithmetic."""

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
