"""Timing of device work: wall clock around it, or CUDA events that never make the host wait inside a loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


class Timer:
    """Wall-clock timing that waits for queued device work at both ends (:meth:`__call__`), or marks on the current
    stream that time its work without waiting for it (:meth:`mark`, :meth:`between`)."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self) -> torch.cuda.Event | float:
        """A point in the current stream's work (CUDA; reached when the work queued before it is done), or now."""
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def between(self, began: torch.cuda.Event | float, ended: torch.cuda.Event | float) -> float:
        """Seconds from one :meth:`mark` to a later one (waits for the later one to be reached)."""
        if isinstance(began, float):
            return ended - began
        ended.synchronize()
        return began.elapsed_time(ended) / 1e3

    def sync(self) -> None:
        """Wait for the current stream (not for a decode stream running beside it)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def __call__(self, fn: Callable[[], object]) -> tuple[float, object]:
        self.sync()
        began = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - began, out
