"""The memory-policy interface: decide, per chunk, which stored frames to attend and at which positions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from relaxforcing.memory.view import MemoryView


class StoreView(Protocol):
    """All a policy may read from a frame store: its batch size, how many frames are committed, and the layer-0
    key prototypes of frames. Policies never see keys, values, slots or devices."""

    @property
    def batch(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        """L2-normalised layer-0 key prototype of the union of ``frames`` ``[B, n]`` per sample -> ``[B, D]``."""
        ...


@dataclass(frozen=True)
class MemoryPolicy(ABC):
    """A policy is pure: it reads frame prototypes from the store but never writes keys or values.

    Subclasses are frozen dataclasses whose fields are the user-facing parameters
    (``--memory name:field=value,...``). ``chunk_frames`` is set by the engine.
    """

    name: ClassVar[str]
    aliases: ClassVar[dict[str, str]] = {}
    """Extra parameter spellings accepted on the command line, e.g. ``{"lambda": "lambda_redundancy"}``."""

    chunk_frames: int = 3

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"{self.name}: chunk_frames={self.chunk_frames} must be >= 1")

    @property
    @abstractmethod
    def sink_frames(self) -> int:
        """Frames ``0..sink_frames-1`` the store must pin forever."""

    @property
    @abstractmethod
    def max_lag(self) -> int:
        """The furthest any read reaches behind the chunk start, in frames (sinks excluded)."""

    @abstractmethod
    def select(self, store: StoreView, start: int) -> MemoryView:
        """Frames and positions for the chunk starting at global frame ``start``."""

    def steady_frames(self) -> int:
        """Cached frames attended per chunk once warm-up is over (the memory length at steady state)."""
        far = 100_000 * self.chunk_frames
        return self.select(_SteadyStateStore(far), far).frames.shape[1]

    def queries(self, start: int) -> range:
        """Absolute frame indices of the chunk being denoised."""
        return range(start, start + self.chunk_frames)

    def spec(self) -> str:
        """The ``name:key=value,...`` string that rebuilds this policy."""
        from dataclasses import fields

        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "chunk_frames")
        return f"{self.name}:{params}" if params else self.name


class _SteadyStateStore:
    """A ``StoreView`` far into a stream: enough for a policy's layout (which frames, not which scores)."""

    batch = 1

    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(frames.shape[0], 8) + frames.float().mean(), dim=-1)


def contiguous_positions(start: int, count: int) -> list[int]:
    """Positions ``start-count .. start-1``: cached frames placed right before the chunk."""
    return list(range(start - count, start))
