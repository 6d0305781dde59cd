"""Prompt contexts for the real model: umT5 encodings cached on disk and held on the host per prompt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from relaxforcing.text.umt5 import encode_prompts

TEXT_DTYPE = torch.bfloat16
"""umT5 runs in bf16 as in Wan (its released weights are bf16); the prompt cache is keyed on it."""


def default_text_cache() -> Path:
    """``$XDG_CACHE_HOME/relaxforcing/text`` (``~/.cache/relaxforcing/text``): prompt embeddings, one file each."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relaxforcing" / "text"


class PromptContexts:
    """`VideoPipeline.encode_text` for umT5: prompts -> ``[B, text_len, text_dim]`` contexts.

    A prompt is encoded once (through the on-disk cache of
    :func:`~relaxforcing.text.umt5.encode_prompts`) and its context kept on the CPU (4 MiB in bf16 at Wan's
    512 x 4096). :meth:`prepare` encodes a whole prompt list with one encoder load; calling the object encodes
    whatever is missing the same way. Either way the encoder is freed before the call returns, so it is gone before
    the DiT runs (the DiT's weights are resident meanwhile: 2.6 GB for 1.3B in bf16, beside umT5-XXL's 11 GB).
    """

    def __init__(
        self,
        source: tuple[Path, Path],
        cache_dir: Path,
        text_len: int,
        text_dim: int,
        device: str | torch.device,
        dtype: torch.dtype,
    ):
        self.source, self.cache_dir = source, cache_dir
        self.text_len, self.text_dim = text_len, text_dim
        self.device, self.dtype = device, dtype
        self._contexts: dict[str, torch.Tensor] = {}

    def prepare(self, prompts: Sequence[str]) -> None:
        """Encode every prompt not held yet, all with a single encoder load, then free the encoder."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._contexts]
        if not missing:
            return
        rows = encode_prompts(missing, self.source, self.cache_dir, dtype=TEXT_DTYPE, device=self.device,
                              max_length=self.text_len)
        width = rows[0].shape[-1]
        if width != self.text_dim:
            raise ValueError(f"the text encoder gives {width}-wide rows but the DiT takes text_dim={self.text_dim}")
        self._contexts.update(zip(missing, rows, strict=True))

    def interpret(self, prompt: str) -> str | None:
        """umT5 reads prompts as written."""
        return None

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """``[B, text_len, text_dim]`` contexts on the pipeline's device and dtype, rows past each prompt zero."""
        self.prepare(prompts)
        return torch.stack([self._contexts[p] for p in prompts]).to(device=self.device, dtype=self.dtype)
