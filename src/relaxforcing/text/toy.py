"""Closed-vocabulary text encoder of the toy world: fixed seeded word vectors plus sinusoidal positions."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch

from relaxforcing.toyworld.captions import VOCABULARY, caption_words

TEXT_LEN = 24
"""Tokens per prompt (one per word); rows past the prompt are zero."""
TEXT_DIM = 64
"""Width of each token vector."""


class ToyTextEncoder:
    """Encodes toy-world prompts to ``[B, 24, 64]`` without trained weights, like the umT5 path in shape.

    Token ``i`` of a prompt is ``word_vector(word_i) + sinusoid(i)``. Word vectors are ``N(0, 1)`` draws from a
    CPU ``torch.Generator`` seeded with the CRC32 of the word, so they are the same on every machine and do not
    change when words are added to the vocabulary. Prompts are lower-cased and punctuation is dropped.
    """

    text_len = TEXT_LEN
    text_dim = TEXT_DIM

    def __init__(self) -> None:
        self.vocabulary = VOCABULARY
        self._index = {word: i for i, word in enumerate(VOCABULARY)}
        self._words = torch.stack([_word_vector(word) for word in VOCABULARY])  # [V, D]
        self._positions = _sinusoids(TEXT_LEN, TEXT_DIM)  # [L, D]

    def encode(self, prompts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Encode prompts to float32 ``[B, 24, 64]``; the empty prompt gives all zeros.

        Raises:
            ValueError: A word outside the vocabulary (named, with the nearest word), or more than 24 words.
        """
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        out = torch.zeros(len(prompts), TEXT_LEN, TEXT_DIM)
        for row, prompt in enumerate(prompts):
            words = caption_words(prompt)
            if len(words) > TEXT_LEN:
                raise ValueError(
                    f"prompt has {len(words)} words, the toy text encoder reads at most {TEXT_LEN}: {prompt!r}"
                )
            ids = torch.tensor([self._index[word] for word in words], dtype=torch.long)
            out[row, : len(words)] = self._words[ids] + self._positions[: len(words)]
        return out.to(device)


def _word_vector(word: str) -> torch.Tensor:
    generator = torch.Generator(device="cpu").manual_seed(zlib.crc32(word.encode()))
    return torch.randn(TEXT_DIM, generator=generator)


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal positions ``[length, dim]``: sin on even, cos on odd channels."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(position * frequency)
    out[:, 1::2] = torch.cos(position * frequency)
    return out
