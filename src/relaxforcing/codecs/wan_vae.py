"""The Wan2.1 VAE decoder (diffusers `AutoencoderKLWan`) with a streaming decode that carries its causal cache."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from relaxforcing.checkpoints.files import read_checkpoint, tensors_only
from relaxforcing.checkpoints.fit import load_strict
from relaxforcing.checkpoints.wan_vae_names import is_original_vae_layout, vae_from_original
from relaxforcing.codecs.base import to_signed_video

LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
"""Per-channel mean of Wan2.1 VAE latents; the DiT works on (mu - mean) / std."""
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
"""Per-channel std of Wan2.1 VAE latents."""
FRAMES_PER_LATENT = 4
"""VAE time stride: each latent after the first decodes to 4 frames, the first to 1."""
SPACE_RATIO = 8
"""VAE space stride: each latent cell covers 8x8 pixels."""

WAN21_VAE_CONFIG: dict = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "latents_mean": list(LATENT_MEAN),
    "latents_std": list(LATENT_STD),
}
"""`AutoencoderKLWan` arguments of ``Wan2.1_VAE.pth`` (the diffusers defaults, written out so they stay local)."""


def load_wan_vae(
    path: str | Path,
    config: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> AutoencoderKLWan:
    """Load the Wan2.1 VAE from local files only.

    Args:
        path: Wan's ``Wan2.1_VAE.pth`` (original key names; read weights-only), a state-dict file under either
            naming, or a diffusers ``vae/`` folder (``config.json`` + weights).
        config: `AutoencoderKLWan` arguments overriding :data:`WAN21_VAE_CONFIG` (single-file checkpoints only).
        dtype: parameter dtype.
        device: parameter device.

    Raises:
        CheckpointError: unreadable or unsafe file, or tensors that do not fit the config.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        if config is not None:
            raise ValueError(f"{path} carries its own config.json; config= applies to single files only")
        return AutoencoderKLWan.from_pretrained(path, local_files_only=True, torch_dtype=dtype).to(device).eval()
    kwargs = {**WAN21_VAE_CONFIG, **(config or {})}
    state = tensors_only(read_checkpoint(path), path)
    if is_original_vae_layout(list(state)):
        state = vae_from_original(state, kwargs["num_res_blocks"])
    with torch.device("meta"):
        vae = AutoencoderKLWan(**kwargs)
    sizes = {k: v for k, v in kwargs.items() if not k.startswith("latents_")}
    load_strict(vae, state, f"AutoencoderKLWan({sizes})", path, dtype, device)
    return vae.eval()


def to_uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, T, H, W, 3]`` uint8 (rounded)."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


class WanVAEDecoder:
    """Decodes normalised DiT latents to uint8 video, whole or chunk by chunk.

    Pixel frames: the first latent gives 1 frame, every later latent 4, so F latents give 1 + 4(F - 1).
    """

    space_ratio = SPACE_RATIO

    def __init__(self, vae: AutoencoderKLWan, channels_last: bool | None = None):
        """``channels_last`` stores the decoder's 3-D convolution weights channels-last, which lets cuDNN skip a
        layout conversion per call (232 vs 274 ms per 832x480 chunk on an H200); default: on CUDA."""
        cfg = vae.config
        if cfg.patch_size is not None or cfg.is_residual:
            raise ValueError(f"only the Wan2.1 VAE is supported (got patch_size={cfg.patch_size}, "
                             f"is_residual={cfg.is_residual}: a Wan2.2 VAE)")
        self.vae = vae
        param = next(vae.parameters())
        if param.is_cuda if channels_last is None else channels_last:
            for weight in vae.decoder.parameters():
                if weight.dim() == 5:  # [out, in, t, h, w] convolution kernels
                    weight.data = weight.data.contiguous(memory_format=torch.channels_last_3d)
        self.mean = torch.tensor(cfg.latents_mean, device=param.device, dtype=param.dtype).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, device=param.device, dtype=param.dtype).view(1, -1, 1, 1, 1)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT latents ``[B, z, f, h, w]`` -> VAE latents z * std + mean, in the VAE's dtype and device."""
        if latents.ndim != 5 or latents.shape[1] != self.mean.shape[1]:
            raise ValueError(f"latents must be [B, {self.mean.shape[1]}, f, h, w], got {list(latents.shape)}")
        return latents.to(self.mean) * self.std + self.mean

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, 1 + 4(F-1), H, W, 3]`` -> normalised DiT latents ``[B, z, F, H/8, W/8]`` (float32): the
        posterior mean, ``(mu - mean) / std``, the first frame encoded alone as in Self-Forcing's ``--i2v``."""
        if frames.ndim != 5 or (frames.shape[1] - 1) % FRAMES_PER_LATENT:
            raise ValueError(f"the Wan VAE encodes 1 + 4k frames [B, T, H, W, 3], got {list(frames.shape)}")
        pixels = to_signed_video(frames).transpose(1, 2).to(self.mean)  # [B, 3, T, H, W]
        mu = self.vae.encode(pixels).latent_dist.mean
        return ((mu - self.mean) / self.std).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """A whole latent video ``[B, z, F, h, w]`` -> frames ``[B, 1 + 4(F-1), 8h, 8w, 3]`` uint8."""
        return to_uint8_frames(self.vae.decode(self.denormalize(latents)).sample)

    def chunk_decoder(self) -> VAEChunkDecoder:
        """A fresh streaming decoder: over consecutive chunks it gives :meth:`decode` of their concatenation
        (to float rounding: the 1x1x1 post-quant conv runs per chunk, so a uint8 value may differ by 1)."""
        return VAEChunkDecoder(self)

    def video_frames(self, latent_frames: int) -> int:
        """``1 + 4(F - 1)``: the first latent decodes to 1 frame, every later one to 4."""
        if latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
        return 1 + FRAMES_PER_LATENT * (latent_frames - 1)


class VAEChunkDecoder:
    """Chunk-by-chunk decoding that keeps the decoder's causal-conv feature cache between calls.

    Drives diffusers' decoder exactly as `AutoencoderKLWan._decode` does (one latent frame per call, a list of
    per-conv caches, ``first_chunk`` only for the very first latent), but on a cache owned by this object.
    """

    def __init__(self, decoder: WanVAEDecoder):
        self.decoder = decoder
        # One slot per causal conv, as `AutoencoderKLWan.clear_cache` sizes it (1x1x1 shortcuts leave theirs unused);
        # a slot holds the conv's last input frames, or diffusers' "Rep" marker after the first latent.
        convs = sum(isinstance(m, WanCausalConv3d) for m in decoder.vae.decoder.modules())
        self._cache: list = [None] * convs
        self._batch: int | None = None

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The next chunk ``[B, z, f, h, w]`` (normalised) -> its frames ``[B, T, 8h, 8w, 3]`` uint8.

        T = 1 + 4(f - 1) for the first chunk of the stream and 4f afterwards.
        """
        return to_uint8_frames(self.decode_pixels(latents))

    @torch.no_grad()
    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """As :meth:`decode`, but pixels ``[B, 3, T, 8h, 8w]`` in [-1, 1], in the VAE's dtype."""
        if latents.ndim != 5 or latents.shape[2] < 1:
            raise ValueError(f"a chunk must be [B, z, f>=1, h, w], got {list(latents.shape)}")
        if self._batch is not None and latents.shape[0] != self._batch:
            raise ValueError(f"batch size changed mid-stream: {latents.shape[0]} after {self._batch}")
        vae = self.decoder.vae
        x = vae.post_quant_conv(self.decoder.denormalize(latents))  # 1x1x1 conv: no temporal state
        frames = []
        for i in range(x.shape[2]):
            conv_index = [0]
            frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=self._cache, feat_idx=conv_index,
                                      first_chunk=self._batch is None and i == 0))
        self._batch = latents.shape[0]
        return torch.cat(frames, dim=2).clamp(-1, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The causal-conv cache as CPU tensors: ``cache.i`` for a held tensor, an empty ``rep.i`` for diffusers'
        "Rep" marker, nothing for an unused slot; ``batch`` once decoding has begun."""
        state = {"slots": torch.tensor(len(self._cache))}
        if self._batch is not None:
            state["batch"] = torch.tensor(self._batch)
        for i, entry in enumerate(self._cache):
            if isinstance(entry, torch.Tensor):
                state[f"cache.{i}"] = entry.cpu()
            elif entry == "Rep":
                state[f"rep.{i}"] = torch.empty(0)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if int(state["slots"]) != len(self._cache):
            raise ValueError(f"the saved VAE decoder state has {int(state['slots'])} conv slots, this VAE "
                             f"{len(self._cache)}")
        device = self.decoder.mean.device
        self._cache = [state[f"cache.{i}"].to(device) if f"cache.{i}" in state else
                       "Rep" if f"rep.{i}" in state else None for i in range(len(self._cache))]
        self._batch = int(state["batch"]) if "batch" in state else None
