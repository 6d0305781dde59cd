"""Prompt-parallel multi-GPU runs under torchrun: each rank takes every WORLD_SIZE-th job."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

__all__ = ["finish", "init", "local_device", "process_group", "shard", "world"]

GROUP_TIMEOUT = timedelta(hours=48)
"""How long a collective may wait. Ranks share no work, so the closing barrier waits for the slowest rank's
whole share (hours on a resumed run where one rank's videos already exist); NCCL's 10-minute default would abort."""


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


def init(timeout: timedelta = GROUP_TIMEOUT) -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1``: NCCL on this rank's GPU, gloo on CPU.

    Idempotent; a single process (no torchrun) starts no group. Returns whether a group is up.
    """
    _, size = world()
    if size < 2:
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            device = torch.device(local_device())
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", timeout=timeout, device_id=device)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    return True


def finish() -> None:
    """Wait until every rank is done, then leave the process group; a no-op without one."""
    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


@contextmanager
def process_group(timeout: timedelta = GROUP_TIMEOUT) -> Iterator[bool]:
    """:func:`init` on entry, :func:`finish` on a normal exit. On an exception the group is left without the
    barrier (the other ranks would wait for this one forever; torchrun stops them when this rank fails)."""
    up = init(timeout)
    try:
        yield up
    except BaseException:
        if dist.is_initialized():
            dist.destroy_process_group()
        raise
    finish()
