"""Lossless space-to-depth codec of the toy world: 4 frames x 4x4 pixels x RGB become 192 latent channels."""

from __future__ import annotations

import torch

from relaxforcing.codecs.base import to_signed_video

TIME_RATIO = 4
"""Video frames per latent frame."""
SPACE_RATIO = 4
"""Pixels per latent cell along each spatial axis."""
LATENT_CHANNELS = TIME_RATIO * 3 * SPACE_RATIO * SPACE_RATIO


class SpaceToDepthCodec:
    """Pixels rearranged into latents, bit-exact both ways in float32.

    Latent channel ``((f * 3 + c) * 4 + dy) * 4 + dx`` of latent frame ``i`` and cell ``(y, x)`` holds colour
    channel ``c`` of video frame ``4 i + f`` at pixel ``(4 y + dy, 4 x + dx)``. Scaling is the identity: latents
    are the [-1, 1] pixels themselves (toy-world pixels have mean -0.19 and std 0.66 over sample_world seeds
    0..255), which keeps the round trip exact; a mean/std normalisation would not be.
    """

    latent_channels = LATENT_CHANNELS
    time_ratio = TIME_RATIO
    space_ratio = SPACE_RATIO

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B, T, 3, H, W]`` in [-1, 1] to latents ``[B, 192, T/4, H/4, W/4]``."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video [B, T, 3, H, W], got {tuple(video.shape)}")
        b, t, _, h, w = video.shape
        if t % TIME_RATIO or h % SPACE_RATIO or w % SPACE_RATIO:
            raise ValueError(
                f"frames ({t}) must be a multiple of {TIME_RATIO} and height x width ({h}x{w}) of {SPACE_RATIO}"
            )
        f, y, x = t // TIME_RATIO, h // SPACE_RATIO, w // SPACE_RATIO
        blocks = video.reshape(b, f, TIME_RATIO, 3, y, SPACE_RATIO, x, SPACE_RATIO)
        return blocks.permute(0, 2, 3, 5, 7, 1, 4, 6).reshape(b, LATENT_CHANNELS, f, y, x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, 192, F, h, w]`` to video ``[B, 4F, 3, 4h, 4w]``, the exact inverse of ``encode``."""
        if latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"expected latents [B, {LATENT_CHANNELS}, F, h, w], got {tuple(latents.shape)}")
        b, _, f, y, x = latents.shape
        blocks = latents.reshape(b, TIME_RATIO, 3, SPACE_RATIO, SPACE_RATIO, f, y, x)
        video = blocks.permute(0, 5, 1, 2, 6, 3, 7, 4)  # [B, F, 4, 3, h, 4, w, 4]
        return video.reshape(b, f * TIME_RATIO, 3, y * SPACE_RATIO, x * SPACE_RATIO)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, 4F, H, W, 3]`` -> latents ``[B, 192, F, H/4, W/4]``."""
        return self.encode(to_signed_video(frames))

    def chunk_decoder(self) -> SpaceToDepthDecoder:
        """A streaming decoder: feed latent chunks in order, get uint8 frames back."""
        return SpaceToDepthDecoder(self)

    def video_frames(self, latent_frames: int) -> int:
        return TIME_RATIO * latent_frames


class SpaceToDepthDecoder:
    """Decodes one latent chunk at a time (the streaming interface shared with the Wan VAE decoder)."""

    def __init__(self, codec: SpaceToDepthCodec) -> None:
        self.codec = codec
        self.frames_decoded = 0
        """Video frames returned so far."""

    def decode(self, chunk: torch.Tensor) -> torch.Tensor:
        """Latent chunk ``[B, 192, f, h, w]`` to uint8 sRGB frames ``[B, 4f, 4h, 4w, 3]``."""
        video = self.codec.decode(chunk)  # [B, 4f, 3, H, W]
        self.frames_decoded += video.shape[1]
        pixels = ((video.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(0, 1, 3, 4, 2)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"frames_decoded": torch.tensor(self.frames_decoded)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.frames_decoded = int(state["frames_decoded"])
