"""What a pipeline needs of a text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class TextEncoder(Protocol):
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> ``[B, L, text_dim]`` contexts on the pipeline's device; ValueError for a prompt it cannot
        read."""
        ...

    def prepare(self, prompts: Sequence[str]) -> None:
        """Make every prompt ready ahead of generation (e.g. one encoder load for all of them), or check them."""
        ...

    def interpret(self, prompt: str) -> str | None:
        """One line saying how ``prompt`` is read when the encoder reads it as something else (the toy model's
        closed world), else None."""
        ...
