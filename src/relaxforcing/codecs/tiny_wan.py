"""A tiny preview decoder for Wan 2.1 latents: the TAEHV architecture (madebyollin/taehv, MIT; weights
``taew2_1.pth`` / ``taew2_1.safetensors``, ~11 M parameters), written from its public description and layout.

The decoder is one sequence (state-dict names ``decoder.{i}....`` as in the public file): clamp ``tanh(x/3)*3``,
3x3 conv to 256 channels, then three stages of [3 MemBlocks, x2 nearest upsample, TGrow, 3x3 conv] with widths
256 -> 128 -> 64 -> 64, a ReLU and a 3x3 conv to RGB. A MemBlock adds the block's previous-timestep *input* to its
own (``relu(convs(cat[x, past]) + x)``); TGrow is a 1x1 conv that turns each frame into ``stride`` frames. For Wan 2.1
the first TGrow keeps the frame rate and the other two double it: each latent gives 4 frames, and the first 3
frames of a stream are dropped, so F latents give 1 + 4(F - 1) frames as from the Wan VAE. It reads the DiT's
latents as they are (no mean/std) and returns [0, 1] RGB. Preview grade: use the full Wan VAE for quality metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from relaxforcing.checkpoints.files import CheckpointError, read_checkpoint, tensors_only

WIDTHS = (256, 128, 64, 64)
TIME_UPSCALE = (False, True, True)
"""Per stage: whether its TGrow doubles the frame rate (Wan 2.1: x4 in time over the last two stages)."""


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """``relu(convs(cat[x, past]) + skip(x))`` where ``past`` is this block's input one timestep earlier."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(),
                                  _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(torch.cat([x, past], dim=1)) + self.skip(x))


class TGrow(nn.Module):
    """A 1x1 conv giving each frame ``stride`` frames: ``[NT, C, H, W]`` -> ``[NT*stride, C, H, W]``."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).reshape(-1, *x.shape[1:])


class TinyWanDecoder(nn.Module):
    """The TAEHV decoder for 16-channel Wan 2.1 latents (``widths`` smaller than the public ones only in tests)."""

    def __init__(self, latent_channels: int = 16, widths: tuple[int, ...] = WIDTHS,
                 time_upscale: tuple[bool, ...] = TIME_UPSCALE):
        super().__init__()
        layers: list[nn.Module] = [Clamp(), _conv(latent_channels, widths[0]), nn.ReLU()]
        for stage, grow in enumerate(time_upscale):
            width = widths[stage]
            layers += [MemBlock(width, width), MemBlock(width, width), MemBlock(width, width),
                       nn.Upsample(scale_factor=2), TGrow(width, 2 if grow else 1),
                       _conv(width, widths[stage + 1], bias=False)]
        layers += [nn.ReLU(), _conv(widths[-1], 3)]
        self.decoder = nn.Sequential(*layers)
        self.time_upscale = 2 ** sum(time_upscale)
        self.frames_to_trim = self.time_upscale - 1


def load_tiny_wan_decoder(path: str | Path, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> TinyWanDecoder:
    """The decoder half of a TAEHV checkpoint for Wan 2.1 (``taew2_1.pth`` read weights-only, or
    ``.safetensors``); encoder tensors are ignored.

    Raises:
        CheckpointError: unreadable file, or decoder tensors missing or of other shapes than the Wan 2.1 layout.
    """
    state = tensors_only(read_checkpoint(path), path)
    decoder = {k: v for k, v in state.items() if k.startswith("decoder.")}
    convs = [decoder.get(f"decoder.{i}.weight") for i in (1, 8, 14, 20)]  # the width of each stage
    if any(c is None or c.ndim != 4 for c in convs) or convs[0].shape[1] != 16:
        raise CheckpointError(f"{path} is not a TAEHV decoder for 16-channel Wan 2.1 latents")
    model = TinyWanDecoder(widths=tuple(c.shape[0] for c in convs))
    for name, wanted in model.state_dict().items():
        found = decoder.get(name)
        if found is not None and isinstance(_layer(model, name), TGrow) and found.shape[0] > wanted.shape[0]:
            decoder[name] = found[-wanted.shape[0]:]  # a time-doubling TGrow's weights where this one keeps the rate
    missing = sorted(set(model.state_dict()) - set(decoder))
    wrong = [f"{k} {list(v.shape)}" for k, v in decoder.items()
             if k in model.state_dict() and v.shape != model.state_dict()[k].shape]
    if missing or wrong or len(decoder) != len(model.state_dict()):
        detail = f"missing {missing[:3]}" if missing else f"shapes {wrong[:3]}" if wrong else "unexpected tensors"
        raise CheckpointError(f"{path} is not a TAEHV decoder for Wan 2.1 latents ({detail})")
    model.load_state_dict(decoder)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _layer(model: TinyWanDecoder, name: str) -> nn.Module:
    return model.decoder[int(name.split(".")[1])]


class TinyWanCodec:
    """The tiny decoder as a :class:`~relaxforcing.codecs.base.Codec` (decode only)."""

    space_ratio = 8

    def __init__(self, model: TinyWanDecoder):
        self.model = model

    def chunk_decoder(self) -> TinyWanChunkDecoder:
        return TinyWanChunkDecoder(self.model)

    def video_frames(self, latent_frames: int) -> int:
        return 1 + self.model.time_upscale * (latent_frames - 1)


class TinyWanChunkDecoder:
    """Streams latents through the decoder one latent frame at a time; each MemBlock keeps the input of the last
    timestep it saw, so chunk by chunk gives the frames of one pass over the whole video (to a uint8 level: batched
    convolutions round differently). One latent frame at a time keeps the full-resolution activations to 4 frames
    (a 12-frame 832x480 chunk at once takes ~2.6 GB more)."""

    def __init__(self, model: TinyWanDecoder):
        self.model = model
        self._past: dict[int, torch.Tensor] = {}  # MemBlock index -> its last input [B, C, H, W]
        self._started = False

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT latents ``[B, 16, f, h, w]`` -> uint8 frames ``[B, T, 8h, 8w, 3]`` (T = 4f, 4f - 3 for the first)."""
        return torch.cat([self._decode_step(latents[:, :, i:i + 1]) for i in range(latents.shape[2])], dim=1)

    def _decode_step(self, latents: torch.Tensor) -> torch.Tensor:
        """One or more latent frames ``[B, 16, f, h, w]`` together -> their uint8 frames."""
        param = next(self.model.parameters())
        batch = latents.shape[0]
        x = latents.to(param).movedim(2, 1).flatten(0, 1)  # [B*f, C, h, w], frames of a sample consecutive
        for index, layer in enumerate(self.model.decoder):
            if isinstance(layer, MemBlock):
                steps = x.unflatten(0, (batch, -1))  # [B, t, C, H, W]
                first = self._past.get(index, torch.zeros_like(steps[:, 0]))
                past = torch.cat([first[:, None], steps[:, :-1]], dim=1).flatten(0, 1)
                self._past[index] = steps[:, -1]
                x = layer(x, past)
            else:
                x = layer(x)
        video = x.unflatten(0, (batch, -1))  # [B, T, 3, H, W] in [0, 1]
        if not self._started:
            video = video[:, self.model.frames_to_trim:]
            self._started = True
        return (video.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"past.{i}": t.cpu() for i, t in self._past.items()}
        return {**state, "started": torch.tensor(int(self._started))}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = next(self.model.parameters()).device
        self._past = {int(k.split(".")[1]): v.to(device) for k, v in state.items() if k.startswith("past.")}
        self._started = bool(int(state["started"]))
