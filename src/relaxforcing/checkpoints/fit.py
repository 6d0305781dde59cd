"""Strict loading of a state dict into a model built on the meta device, with errors that name the keys."""

from __future__ import annotations

from pathlib import Path

import torch

from relaxforcing.checkpoints.files import CheckpointError

SHOWN = 4
"""How many offending keys an error message names."""


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], expected: object, source: str | Path) -> None:
    """Raise CheckpointError naming the first missing, unexpected and mis-shaped keys, and what was expected."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [f"{k} {list(state[k].shape)} != {list(s)}" for k, s in shapes.items()
             if k in state and tuple(state[k].shape) != s]
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:SHOWN])}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise CheckpointError(f"{source} does not fit {expected}: " + "; ".join(problems))


def load_strict(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    expected: object,
    source: str | Path,
    dtype: torch.dtype,
    device: str | torch.device,
) -> None:
    """Check ``state`` against ``model`` (usually on meta), then assign its tensors, cast, with ``strict=True``."""
    check_state(model, state, expected, source)
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{source} holds NaN or Inf values in {len(broken)} tensors: "
                              f"{', '.join(sorted(broken)[:SHOWN])}")
    cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=True, assign=True)
