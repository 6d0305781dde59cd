"""Prompt-parallel multi-GPU runs under torchrun: each rank takes every WORLD_SIZE-th job."""

from __future__ import annotations

import os
from typing import TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_device() -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is present, else cpu."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def shard(jobs: list[T]) -> list[T]:
    """This rank's share of ``jobs`` (round robin, so long and short prompts spread evenly)."""
    rank, size = world()
    return jobs[rank::size]
