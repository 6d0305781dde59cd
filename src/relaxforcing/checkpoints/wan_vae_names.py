"""Key names of the Wan2.1 VAE: original ``Wan2.1_VAE.pth`` names -> diffusers `AutoencoderKLWan` names."""

from __future__ import annotations

import torch

_TOP = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
"""The 1x1x1 convs around the latent (original -> diffusers)."""

_CODER = {
    "conv1.": "conv_in.",
    "middle.0.": "mid_block.resnets.0.",
    "middle.1.": "mid_block.attentions.0.",
    "middle.2.": "mid_block.resnets.1.",
    "head.0.": "norm_out.",
    "head.2.": "conv_out.",
}
"""Prefixes inside ``encoder.``/``decoder.`` outside the down/up stacks."""

_RESIDUAL = {
    "residual.0.": "norm1.",  # RMS_norm
    "residual.2.": "conv1.",  # CausalConv3d (1: SiLU)
    "residual.3.": "norm2.",
    "residual.6.": "conv2.",  # (4: SiLU, 5: Dropout)
    "shortcut.": "conv_shortcut.",
}
"""Inside a residual block, Wan's flat ``nn.Sequential`` -> diffusers' named layers. Resample and attention
layers (``resample.1``, ``time_conv``, ``norm``, ``to_qkv``, ``proj``) keep their names."""


def vae_from_original(state_dict: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Rename an original Wan2.1 VAE state dict to diffusers `AutoencoderKLWan` names.

    Args:
        state_dict: keys as in ``Wan2.1_VAE.pth`` (``encoder.downsamples.K.*``, ``decoder.upsamples.K.*``...).
        num_res_blocks: residual blocks per encoder level (the decoder has one more); 2 for Wan2.1.

    Returns:
        The same tensors under diffusers names; keys outside the known layout pass through unchanged.
    """
    return {_rename(k, num_res_blocks): v for k, v in state_dict.items()}


def is_original_vae_layout(keys: list[str]) -> bool:
    """Whether the keys use the original Wan VAE names (``decoder.upsamples.*``, top-level ``conv2``)."""
    return any(k.startswith(("decoder.upsamples.", "encoder.downsamples.", "conv2.")) for k in keys)


def _rename(key: str, num_res_blocks: int) -> str:
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return _swap(key, _TOP)
    if rest.startswith("downsamples."):
        # The encoder's flat list keeps its order and indices: [res]*n (+ resample) per level.
        _, index, inner = rest.split(".", 2)
        return f"encoder.down_blocks.{index}.{_swap(inner, _RESIDUAL)}"
    if rest.startswith("upsamples."):
        # The decoder's flat list is [res]*(n+1) + resample per level (no resample after the last level).
        _, index, inner = rest.split(".", 2)
        level, slot = divmod(int(index), num_res_blocks + 2)
        layer = f"resnets.{slot}" if slot <= num_res_blocks else "upsamplers.0"
        return f"decoder.up_blocks.{level}.{layer}.{_swap(inner, _RESIDUAL)}"
    renamed = _swap(rest, _CODER)
    if renamed.startswith("mid_block.resnets."):
        _, _, index, inner = renamed.split(".", 3)
        renamed = f"mid_block.resnets.{index}.{_swap(inner, _RESIDUAL)}"
    return f"{part}.{renamed}"


def _swap(key: str, table: dict[str, str]) -> str:
    return next((new + key[len(old):] for old, new in table.items() if key.startswith(old)), key)
