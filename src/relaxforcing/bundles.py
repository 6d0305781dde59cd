"""Load a ready-to-run VideoPipeline: the embedded toy model (default) or a real Self-Forcing/Wan checkpoint."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file

from relaxforcing.distributed import local_device
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.sampling.schedule import FlowSchedule

TOY_WEIGHTS = "toy.safetensors"
TOY_META = "toy.json"


def toy_weights_dir() -> Path:
    return Path(str(resources.files("relaxforcing") / "weights"))


def load_toy(device: str = "cpu", weights_dir: Path | None = None) -> VideoPipeline:
    """The embedded toy model of the procedural world (64x64 video at 16 fps), shipped inside the package."""
    from relaxforcing.codecs.toy_ae import ToyAutoencoder
    from relaxforcing.text.toy import ToyTextEncoder

    folder = weights_dir or toy_weights_dir()
    weights, meta_path = folder / TOY_WEIGHTS, folder / TOY_META
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"the embedded toy model is missing from {folder}; reinstall relaxforcing or "
                                "train one with `relaxforcing train-toy`")
    meta = json.loads(meta_path.read_text())
    model = CausalWanModel(WanConfig.from_dict(meta["model"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    model = model.to(device).eval().requires_grad_(False)
    codec = ToyAutoencoder()
    codec.load_state_dict(load_file(str(folder / meta["codec"]["file"])), strict=True)
    codec = codec.to(device).eval().requires_grad_(False)
    text = ToyTextEncoder()
    schedule = meta["schedule"]
    return VideoPipeline(
        model=model,
        encode_text=lambda prompts: text.encode(prompts, device=device),
        codec=codec,
        latent_hw=tuple(meta["latent_hw"]),
        fps=meta["fps"],
        frames_per_latent=meta["frames_per_latent"],
        schedule=FlowSchedule(**{**schedule, "steps": tuple(schedule["steps"])}),
        upscale=meta.get("upscale", 1),
        name="toy",
    )


def load_pipeline(
    checkpoint: Path | None = None,
    wan_dir: Path | None = None,
    lora: Path | None = None,
    device: str | None = None,
    size: str | None = None,
) -> VideoPipeline:
    """The toy model when no checkpoint is given, else the Wan2.1 stack (DiT + umT5 + Wan VAE) at ``size``."""
    device = device or local_device()
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    if checkpoint is None:
        if wan_dir is not None or lora is not None:
            raise ValueError("--wan-dir and --lora need --checkpoint")
        if size not in (None, "64x64"):
            raise ValueError(f"size {size} is not supported by the embedded toy model, which makes 64x64 video; "
                             "other sizes need a Wan --checkpoint")
        return load_toy(device)
    from relaxforcing.wan_pipeline import load_wan

    return load_wan(checkpoint, wan_dir, lora=lora, device=device, size=size)


def random_pipeline(preset: str, device: str | None = None) -> VideoPipeline:
    """A full-size model with random weights (speed does not depend on them): the DiT preset in bf16 on CUDA,
    random 512-token text embeddings, and the full Wan VAE decoder with random weights; 832x480 latents."""
    from diffusers import AutoencoderKLWan

    from relaxforcing.codecs.wan_vae import WAN21_VAE_CONFIG, WanVAEDecoder

    device = device or local_device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = WanConfig.from_name(preset)
    with torch.device(device):
        model = CausalWanModel(cfg).to(dtype).eval().requires_grad_(False)
    vae = WanVAEDecoder(AutoencoderKLWan(**WAN21_VAE_CONFIG).to(device, dtype).eval())
    return VideoPipeline(model=model,
                         encode_text=lambda prompts: torch.randn(len(prompts), cfg.text_len, cfg.text_dim,
                                                                 device=device, dtype=dtype),
                         codec=vae, latent_hw=(60, 104), name=f"{preset} (random weights)")
