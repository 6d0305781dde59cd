"""Removal of the wrapper prefixes that training code adds to DiT state-dict keys."""

from __future__ import annotations

import torch

from relaxforcing.checkpoints.files import CheckpointError

WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
"""Inserted anywhere in a key by FSDP, activation checkpointing and ``torch.compile``."""

LEADING = ("base_model.model.", "diffusion_model.", "model.")
"""Leading module paths: PEFT's wrapper, single-file (ComfyUI) checkpoints, Self-Forcing's ``WanDiffusionWrapper``."""


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare DiT names them: wrapper parts removed everywhere, then all leading module paths."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key
        for part in WRAPPER_PARTS:
            name = name.replace(part, "")
        while lead := next((p for p in LEADING if name.startswith(p)), None):
            name = name[len(lead):]
        if name in out:
            raise CheckpointError(f"checkpoint entries {key!r} and another both become {name!r} without prefixes")
        out[name] = value
    return out
