"""The `WanConfig` of a DiT checkpoint: from its tensor shapes, or from a Wan or diffusers `config.json`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from relaxforcing.checkpoints.files import CheckpointError
from relaxforcing.model.config import WanConfig

HEAD_DIM = 128
"""Head width of every released Wan2.1 DiT (1.3B: 12 heads, 14B: 40 heads)."""


def infer_config(state_dict: dict[str, torch.Tensor], num_heads: int | None = None) -> WanConfig:
    """Read the model sizes off the shapes of an original-Wan-named DiT state dict.

    Args:
        state_dict: original Wan key names (prefixes already stripped).
        num_heads: attention heads; default ``dim / 128`` (true for every released Wan2.1 size).

    Raises:
        CheckpointError: the tensors are not those of a Wan DiT, or the head count cannot be known.
    """
    required = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                "head.head.weight", "blocks.0.ffn.0.weight")
    absent = [k for k in required if k not in state_dict]
    if absent:
        first = ", ".join(sorted(state_dict)[:4])
        raise CheckpointError(
            f"not a Wan DiT checkpoint: no {', '.join(absent)} among its {len(state_dict)} tensors (first: {first})"
        )
    dim, in_dim, *patch = state_dict["patch_embedding.weight"].shape  # [dim, in_dim, pf, ph, pw]
    if num_heads is None:
        if dim % HEAD_DIM:
            raise CheckpointError(
                f"cannot infer the head count of a dim={dim} DiT (not a multiple of {HEAD_DIM}); "
                "pass config= or put a config.json next to the checkpoint"
            )
        num_heads = dim // HEAD_DIM
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    return WanConfig(
        dim=dim,
        ffn_dim=state_dict["blocks.0.ffn.0.weight"].shape[0],
        freq_dim=state_dict["time_embedding.0.weight"].shape[1],
        num_heads=num_heads,
        num_layers=max(blocks) + 1,
        in_dim=in_dim,
        out_dim=state_dict["head.head.weight"].shape[0] // math.prod(patch),
        text_dim=state_dict["text_embedding.0.weight"].shape[1],
        patch_size=tuple(patch),
    )


def config_from_json(data: dict) -> WanConfig:
    """A `WanConfig` from Wan's `config.json` (``dim``, ``num_heads``...) or diffusers' (``num_attention_heads``...)."""
    if "dim" in data:
        return WanConfig.from_dict(data)
    if "num_attention_heads" not in data:
        raise CheckpointError(f"not a Wan DiT config: neither 'dim' nor 'num_attention_heads' in {sorted(data)[:6]}")
    renamed = {
        "dim": data["num_attention_heads"] * data["attention_head_dim"],
        "num_heads": data["num_attention_heads"],
        "in_dim": data.get("in_channels"),
        "out_dim": data.get("out_channels"),
        **{k: data.get(k) for k in ("ffn_dim", "freq_dim", "num_layers", "text_dim", "patch_size", "eps")},
    }
    return WanConfig.from_dict({k: v for k, v in renamed.items() if v is not None})


def sidecar_config(weights: Path) -> WanConfig | None:
    """The config in the ``config.json`` beside a weights file, if there is one."""
    file = weights.parent / "config.json"
    if not file.is_file():
        return None
    try:
        return config_from_json(json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{file}: not a usable Wan DiT config ({err})") from None
