"""PEFT LoRA adapters (LongLive's ``lora.pt``) merged into a DiT state dict: W' = W + (alpha / r) * B @ A."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from relaxforcing.checkpoints.files import CheckpointError, read_checkpoint, tensors_only
from relaxforcing.checkpoints.prefixes import strip_prefixes

ADAPTER_CONFIG = "adapter_config.json"
"""PEFT's sidecar naming ``r`` and ``lora_alpha``; read from the folder of the LoRA file when present."""


def read_lora(path: str | Path, key: str = "generator_lora") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LoRA factors per target module: ``{"blocks.N.self_attn.q": (A [r, in], B [out, r])}``.

    Args:
        path: LongLive's ``lora.pt`` (``{"generator_lora": ..., "critic_lora": ..., "step": ...}``) or a bare
            PEFT state dict, keys ``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``.
        key: dict entry holding the generator's adapter, used when present.
    """
    raw = read_checkpoint(path)
    state = strip_prefixes(tensors_only(raw.get(key, raw), path))
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        module, sep, part = name.rpartition(".lora_")
        if not sep or part not in ("A.weight", "B.weight"):
            raise CheckpointError(f"{path}: {name!r} is not a LoRA factor (expected <module>.lora_A/lora_B.weight)")
        factors.setdefault(module, {})[part[0]] = tensor
    incomplete = [m for m, ab in factors.items() if len(ab) != 2]
    if incomplete:
        raise CheckpointError(f"{path}: modules {incomplete[:4]} lack a lora_A or lora_B factor")
    if not factors:
        raise CheckpointError(f"{path}: holds no LoRA factors")
    return {m: (ab["A"], ab["B"]) for m, ab in factors.items()}


def lora_scale_from_sidecar(path: str | Path) -> float | None:
    """``lora_alpha / r`` from the ``adapter_config.json`` beside ``path``, or None if there is none."""
    file = Path(path).parent / ADAPTER_CONFIG
    if not file.is_file():
        return None
    cfg = json.loads(file.read_text())
    unsupported = [k for k in ("rank_pattern", "alpha_pattern", "use_dora") if cfg.get(k)]
    if unsupported:
        raise CheckpointError(f"{file}: {', '.join(unsupported)} not supported; only uniform-rank plain LoRA merges")
    if not cfg.get("r") or cfg.get("lora_alpha") is None:
        raise CheckpointError(f"{file}: needs 'r' and 'lora_alpha', got r={cfg.get('r')}, "
                              f"lora_alpha={cfg.get('lora_alpha')}")
    rank = cfg["r"]
    return cfg["lora_alpha"] / (math.sqrt(rank) if cfg.get("use_rslora") else rank)


def merge_lora(
    state_dict: dict[str, torch.Tensor],
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Return a copy of ``state_dict`` with ``W + scale * B @ A`` (computed in float32) for every LoRA module."""
    merged = dict(state_dict)
    for module, (a, b) in factors.items():
        name = f"{module}.weight"
        if name not in merged:
            raise CheckpointError(f"LoRA targets {module!r}, which the base checkpoint does not have")
        weight = merged[name]
        if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != weight.shape or a.shape[0] != b.shape[1]:
            raise CheckpointError(
                f"LoRA factors of {module!r} (A {list(a.shape)}, B {list(b.shape)}) do not fit its weight "
                f"{list(weight.shape)}"
            )
        delta = b.float() @ a.float()  # [out, r] @ [r, in]
        merged[name] = (weight.float() + scale * delta).to(weight.dtype)
    return merged
