"""Atomic on-disk snapshots of a running generation: ``state.json`` plus the tensors it names.

A snapshot is committed by renaming ``state.json`` into place (after its tensor file is written and fsynced),
so a process killed at any moment leaves either the previous snapshot or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
FORMAT = "relaxforcing-stream-state"
VERSION = 1


@dataclass
class Snapshot:
    """A loaded snapshot: JSON metadata and named CPU tensors."""

    directory: Path
    meta: dict
    tensors: dict[str, torch.Tensor]

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix.``, with the prefix removed."""
        return {k.removeprefix(prefix + "."): v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_snapshot(directory: Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write a snapshot atomically (write, fsync, rename), then drop the tensor files of older ones."""
    directory.mkdir(parents=True, exist_ok=True)
    counter = int(meta.get("chunk_index", 0))
    tensor_name = f"state-{counter:06d}-{os.getpid()}.safetensors"
    final = directory / tensor_name
    staging, record = directory / (tensor_name + ".tmp"), directory / (STATE_FILE + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging))
        _fsync(staging)
        os.replace(staging, final)
        record.write_text(json.dumps({"format": FORMAT, "version": VERSION, "tensors": tensor_name, **meta},
                                     indent=1))
        _fsync(record)
    except (OSError, SafetensorError) as error:  # e.g. the disk is full: leave the committed snapshot as it was
        for path in (staging, final, record):  # (the committed snapshot names another tensor file)
            path.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
        raise OSError(f"cannot save the generation state in {directory} ({reason}); the state saved before, if "
                      "any, is kept") from None
    os.replace(record, directory / STATE_FILE)  # the commit point
    _fsync(directory)
    for old in directory.glob("state-*.safetensors*"):
        if old.name != tensor_name:
            old.unlink(missing_ok=True)


def load_snapshot(directory: Path) -> Snapshot:
    """Read the snapshot in ``directory``; every problem is a one-line ValueError naming the file."""
    record = directory / STATE_FILE
    if not record.is_file():
        raise ValueError(f"no saved generation in {directory} (no {STATE_FILE})")
    try:
        meta = json.loads(record.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{record} is corrupt: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{record} is not a relaxforcing generation state")
    if meta.get("version") != VERSION:
        raise ValueError(f"{record} has state version {meta.get('version')}; this relaxforcing reads {VERSION}")
    tensor_file = directory / str(meta.get("tensors"))
    if not tensor_file.is_file():
        raise ValueError(f"{record} names {tensor_file.name}, which is missing")
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{tensor_file} is unreadable (truncated or corrupt?): {error}") from None
    return Snapshot(directory, meta, tensors)


def clear_snapshot(directory: Path) -> None:
    """Remove the files a snapshot wrote (nothing else), and the folder if that leaves it empty."""
    for path in [directory / STATE_FILE, *directory.glob("state-*.safetensors*"), directory / (STATE_FILE + ".tmp")]:
        path.unlink(missing_ok=True)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
