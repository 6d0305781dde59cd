"""The memory-policy interface: decide, per chunk, which stored frames to attend and at which positions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from relaxforcing.memory.view import MemoryView


class StoreView(Protocol):
    """All a policy may read from a frame store: its batch size, how many frames are committed, the layer-0 key
    prototypes of frames, layer-0 token scores, and the memo its previous chunk left. Policies never see keys,
    values, slots or devices."""

    @property
    def batch(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def tokens_per_frame(self) -> int: ...

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        """L2-normalised layer-0 key prototype of the union of ``frames`` ``[B, n]`` per sample -> ``[B, D]`` (CPU)."""
        ...

    def token_scores(self, frames: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        """Participation of every layer-0 token of ``frames`` ``[B, n]`` in attention from the tokens of ``probe``
        ``[B, m]`` (layer-0 keys as queries): ``sum_h (sum_probe k_h) . k_h / (sqrt(D) H)`` -> ``[B, n, T]`` (CPU)."""
        ...

    def memo(self, before: int) -> dict[str, torch.Tensor] | None:
        """The newest :attr:`MemoryView.memo` a chunk starting before ``before`` left (None: none yet)."""
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

    @property
    def recent_frames(self) -> int:
        """The newest frames a chunk may attend that are worth keeping on the device: every frame up to ``max_lag``
        unless a policy reads only some of its older frames (relax: the tail; its history comes from far back)."""
        return self.max_lag

    @property
    def absolute_positions(self) -> bool:
        """Every view attends each stored frame at its own index as its RoPE position (``positions == frames``,
        always): the store may then keep keys rotated from the moment they are written."""
        return False

    @property
    def synthesised_frames(self) -> int:
        """Frames the store keeps besides stored ones, made by folding stored frames in (``MemoryView.folds``, e.g.
        MemRoPE's EMA slots); views name synthesised frame ``s`` as frame ``-1-s``."""
        return 0

    def steady_frames(self) -> int:
        """Cached frames attended per chunk once warm-up is over (the memory length at steady state)."""
        far = 100_000 * self.chunk_frames
        return self.select(LayoutStore(far), far).frames.shape[1]

    def layouts(self, horizon: int | None = None) -> list[MemoryView]:
        """The views of the chunks starting at ``0, f, 2f, ..`` up to ``horizon`` frames (default: well into the
        steady state), on a store whose prototypes are arbitrary: which frames are read, not which are chosen."""
        f = self.chunk_frames
        horizon = horizon or max(256, 2 * (self.sink_frames + self.max_lag) + 10 * f)
        return [self.select(LayoutStore(start), start) for start in range(0, horizon, f)]

    def queries(self, start: int) -> range:
        """Absolute frame indices of the chunk being denoised."""
        return range(start, start + self.chunk_frames)

    def spec(self) -> str:
        """The ``name:key=value,...`` string that rebuilds this policy."""
        from dataclasses import fields

        params = ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "chunk_frames")
        return f"{self.name}:{params}" if params else self.name


class LayoutStore:
    """A ``StoreView`` with ``num_frames`` committed frames and arbitrary prototypes: enough for a policy's layout
    (which frames, not which scores)."""

    batch = 1
    tokens_per_frame = 1

    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(frames.shape[0], 8) + frames.float().mean(), dim=-1)

    def token_scores(self, frames: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*frames.shape, 1)

    def memo(self, before: int) -> dict[str, torch.Tensor] | None:
        return None


def contiguous_positions(start: int, count: int) -> list[int]:
    """Positions ``start-count .. start-1``: cached frames placed right before the chunk."""
    return list(range(start - count, start))
