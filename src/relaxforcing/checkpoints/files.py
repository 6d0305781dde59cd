"""Safe reading of checkpoint files: safetensors (single, sharded, folder) and weights-only torch pickles."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
"""File endings read with ``torch.load(weights_only=True)``."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def resolve_weights(path: str | Path) -> Path:
    """The weights file a path names: the path itself, or in a folder its one shard index, else its one
    ``.safetensors`` file, else its one torch pickle (so a Wan folder resolves to its DiT, not its VAE ``.pth``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        return path
    for pattern in ("*.safetensors.index.json", "*.safetensors", *(f"*{s}" for s in PICKLE_SUFFIXES)):
        found = sorted(path.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:4])
            raise CheckpointError(f"{path} holds several weights files ({names}); name one of them")
    raise CheckpointError(f"{path} holds no weights file (*.safetensors[.index.json] or {', '.join(PICKLE_SUFFIXES)})")


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint's top-level mapping without running any code stored in it.

    Args:
        path: a ``.safetensors`` file, a ``*.safetensors.index.json`` shard index, a torch pickle
            (``.pt``/``.pth``/``.bin``/``.ckpt``), or a folder holding exactly one of these.

    Returns:
        ``{name: tensor}`` for safetensors; the unpickled dict (possibly nested) for torch pickles.

    Raises:
        CheckpointError: missing, truncated or corrupt file, or a pickle holding more than tensors and containers.
    """
    file = resolve_weights(path)
    if file.name.endswith(".safetensors.index.json"):
        return _read_shards(file)
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    if file.suffix in PICKLE_SUFFIXES:
        return _read_pickle(file)
    raise CheckpointError(f"{file}: unknown checkpoint format (expected .safetensors or {', '.join(PICKLE_SUFFIXES)})")


def tensors_only(obj: object, source: str | Path) -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a flat ``{str: Tensor}`` state dict and return it."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{source}: not a flat state dict; entries {bad[:4]} are not named tensors")
    return dict(obj)


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{file}: unreadable safetensors (truncated or corrupt?): {_first_line(err)}") from None


def _read_shards(index: Path) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index}: not a shard index with a 'weight_map' ({err!r})") from None
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_file = index.parent / shard
        if not shard_file.is_file():
            raise CheckpointError(f"{index}: shard {shard} is missing")
        tensors.update(_read_safetensors(shard_file))
    listed, present = set(weight_map), set(tensors)
    if listed != present:
        diff = sorted(listed ^ present)[:4]
        raise CheckpointError(f"{index}: the shards do not hold the tensors the index lists (e.g. {diff})")
    return tensors


def _read_pickle(file: Path) -> dict:
    try:
        # mmap needs the zip layout of torch.save; older pickles are read into memory.
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch's message: a generic first line, then the rejected global, then a pointer to the docs.
        reason = next((line for line in lines[1:] if not line.startswith("Check the documentation")), _first_line(err))
        raise CheckpointError(
            f"{file}: refused; the pickle holds objects beyond tensors and containers, and loading them could "
            f"run code ({reason})"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise CheckpointError(f"{file}: unreadable torch pickle (truncated or corrupt?): {_first_line(err)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{file}: expected a dict at the top level, got {type(obj).__name__}")
    return obj


def _first_line(err: BaseException) -> str:
    """``"Type: first line of the message"``, so every CheckpointError stays on one line."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
