"""Tiny Wan2.1 folders laid out as the public downloads (original and diffusers) and a tiny Self-Forcing ``.pt``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file
from test_checkpoints import diffusers_config_json, random_model, wan_config_json
from test_umt5 import tiny_tokenizer, tiny_umt5, write_wan_folder
from test_wan_vae import TINY_VAE, original_name

from relaxforcing.checkpoints import to_diffusers
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel

TINY_WAN = WanConfig(dim=32, ffn_dim=64, freq_dim=16, num_heads=2, num_layers=2, in_dim=16, out_dim=16,
                     text_dim=16)
"""A two-layer DiT that fits the tiny VAE (16 latent channels) and the tiny umT5 (16 wide); 512 text tokens as
in Wan (diffusers' config has no text length, so both layouts must agree on Wan's)."""

TEST_SIZE = "64x32"
"""A test-only ``WIDTHxHEIGHT`` (latents 4x8): the CPU VAE needs minutes per second of 832x480 video."""
TEST_LATENT_HW = (4, 8)


def tiny_dit(seed: int = 0) -> CausalWanModel:
    return random_model(TINY_WAN, seed)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """The Wan2.1 VAE layout at base_dim 8, weights lifted off their init so the video is not flat."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return vae


def write_wan_dir(root: Path, seed: int = 0) -> Path:
    """``Wan2.1-T2V-1.3B``'s layout: ``config.json``, ``Wan2.1_VAE.pth`` (original names),
    ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's T5 names) and the tokenizer in ``google/umt5-xxl/``."""
    write_wan_folder(root, tiny_umt5(seed))
    (root / "config.json").write_text(json.dumps(wan_config_json(TINY_WAN)))
    torch.save({original_name(k): v for k, v in tiny_vae(seed).state_dict().items()}, root / "Wan2.1_VAE.pth")
    return root


def write_self_forcing_pt(path: Path, model: CausalWanModel) -> Path:
    """Self-Forcing's training checkpoint: ``generator_ema`` (and a different ``generator``), keys ``model.*``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    decoy = {f"model.{k}": torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save({"generator": decoy, "generator_ema": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def write_diffusers_dir(root: Path, model: CausalWanModel, seed: int = 0) -> Path:
    """``Wan2.1-T2V-1.3B-Diffusers``'s layout, holding the same weights as :func:`write_wan_dir` with ``seed``."""
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (root / "transformer" / "config.json").write_text(json.dumps(diffusers_config_json(TINY_WAN)))
    state = {k: v.contiguous() for k, v in to_diffusers(model.state_dict()).items()}
    save_file(state, root / "transformer" / "diffusion_pytorch_model.safetensors")
    tiny_vae(seed).save_pretrained(root / "vae")
    tiny_umt5(seed).save_pretrained(root / "text_encoder")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    return root
