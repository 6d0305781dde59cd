"""Key names of the Wan2.1 DiT: original Wan names <-> diffusers `WanTransformer3DModel` names."""

from __future__ import annotations

import torch

_TOP: dict[str, str] = {
    "patch_embedding.": "patch_embedding.",
    "text_embedding.0.": "condition_embedder.text_embedder.linear_1.",
    "text_embedding.2.": "condition_embedder.text_embedder.linear_2.",
    "time_embedding.0.": "condition_embedder.time_embedder.linear_1.",
    "time_embedding.2.": "condition_embedder.time_embedder.linear_2.",
    "time_projection.1.": "condition_embedder.time_proj.",
    "head.head.": "proj_out.",
    "head.modulation": "scale_shift_table",
}
"""Original -> diffusers prefixes of the keys outside the blocks."""

_BLOCK: dict[str, str] = {
    **{
        f"{wan}.{proj}.": f"{ours}.{name}."
        for wan, ours in (("self_attn", "attn1"), ("cross_attn", "attn2"))
        for proj, name in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"),
                           ("norm_q", "norm_q"), ("norm_k", "norm_k"))
    },
    # Wan's norm3 is the (affine) cross-attention pre-norm and norm2 the FFN norm; diffusers swaps them.
    "norm3.": "norm2.",
    "norm2.": "norm3.",
    "ffn.0.": "ffn.net.0.proj.",
    "ffn.2.": "ffn.net.2.",
    "modulation": "scale_shift_table",
}
"""Original -> diffusers prefixes of the keys inside ``blocks.N.``."""


def to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original-Wan DiT state dict to diffusers names; keys of neither layout pass through unchanged."""
    return {_rename(k, _TOP, _BLOCK): v for k, v in state_dict.items()}


def from_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers `WanTransformer3DModel` state dict to original Wan names (inverse of :func:`to_diffusers`)."""
    top = {v: k for k, v in _TOP.items()}
    block = {v: k for k, v in _BLOCK.items()}
    return {_rename(k, top, block): v for k, v in state_dict.items()}


def is_diffusers_layout(keys: list[str]) -> bool:
    """Whether the keys use diffusers names (``condition_embedder.*``, ``blocks.N.attn1.*``)."""
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys)


def _rename(key: str, top: dict[str, str], block: dict[str, str]) -> str:
    if key.startswith("blocks."):
        _, index, rest = key.split(".", 2)
        return f"blocks.{index}.{_swap_prefix(rest, block)}"
    return _swap_prefix(key, top)


def _swap_prefix(key: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        # A prefix ending in "." matches a module; one without matches a whole parameter name.
        if key.startswith(old) if old.endswith(".") else key == old:
            return new + key[len(old):]
    return key
