"""`load_dit`: a `CausalWanModel` from a Self-Forcing, original Wan, diffusers or LongLive (+LoRA) checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from relaxforcing.checkpoints.diffusers_names import from_diffusers, is_diffusers_layout
from relaxforcing.checkpoints.dit_config import infer_config, sidecar_config
from relaxforcing.checkpoints.files import CheckpointError, read_checkpoint, resolve_weights, tensors_only
from relaxforcing.checkpoints.fit import load_strict
from relaxforcing.checkpoints.lora import lora_scale_from_sidecar, merge_lora, read_lora
from relaxforcing.checkpoints.prefixes import strip_prefixes
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel

MODEL_KEYS = ("generator_ema", "generator", "model")
"""Dict entries that hold the DiT in training checkpoints, in order of preference (EMA first)."""


def load_dit(
    path: str | Path,
    config: WanConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    key: str | None = None,
    lora: str | Path | None = None,
    lora_scale: float | None = None,
) -> CausalWanModel:
    """Load a causal Wan DiT, strictly, from any of the public checkpoint layouts.

    Args:
        path: Self-Forcing / CausVid / LongLive ``.pt`` (dict with ``generator_ema``, ``generator`` or ``model``, or a
            bare state dict; wrapper prefixes ``model.``, ``_fsdp_wrapped_module.``... are removed); an original Wan
            or diffusers ``.safetensors`` file, a ``*.safetensors.index.json`` shard index, or a folder holding one.
        config: model sizes; default: the ``config.json`` beside the weights (Wan or diffusers layout), else inferred
            from the tensor shapes (heads = dim / 128).
        dtype: dtype of every parameter.
        device: where the parameters live.
        key: dict entry to read from a training checkpoint; default: the first of :data:`MODEL_KEYS` present
            (LongLive's own inference reads ``"generator"`` from ``longlive_base.pt``: pass it if both are there).
        lora: a PEFT LoRA file (LongLive ``lora.pt``) merged into the weights before loading.
        lora_scale: ``alpha / r`` of the LoRA; default: from ``adapter_config.json`` beside it, else 1.0.

    Raises:
        CheckpointError: unreadable or unsafe file, a checkpoint of another model, or keys/shapes that do not
            match ``config``.
    """
    state = read_dit_state(path, key)
    if config is None:
        config = sidecar_config(resolve_weights(path)) or infer_config(state)
    if lora is not None:
        scale = lora_scale if lora_scale is not None else lora_scale_from_sidecar(lora)
        state = merge_lora(state, read_lora(lora), 1.0 if scale is None else scale)
    with torch.device("meta"):
        model = CausalWanModel(config)
    load_strict(model, state, config, path, dtype, device)
    return model.eval()


def read_dit_state(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """The DiT tensors of a checkpoint under original Wan names (entry picked, prefixes removed, diffusers renamed)."""
    raw = read_checkpoint(path)
    if key is not None:
        if key not in raw:
            raise CheckpointError(f"{path}: no entry {key!r}; it has {sorted(raw)[:8]}")
        raw = raw[key]
    else:
        raw = next((raw[k] for k in MODEL_KEYS if isinstance(raw.get(k), dict)), raw)
    state = strip_prefixes(tensors_only(raw, path))
    return from_diffusers(state) if is_diffusers_layout(list(state)) else state
