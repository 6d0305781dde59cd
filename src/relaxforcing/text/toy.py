"""Closed-vocabulary text encoder of the toy world: fixed seeded word vectors plus sinusoidal positions, optionally
with each word's phrase mixed in (a fixed stand-in for a contextual encoder such as umT5)."""

from __future__ import annotations

import difflib
import math
import re
import zlib
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import torch

TEXT_LEN = 24
"""Tokens per prompt (one per word); rows past the prompt are zero."""
TEXT_DIM = 64
"""Width of each token vector."""


def split_words(text: str, vocabulary: Sequence[str]) -> list[str]:
    """Lower-case ``text``, drop punctuation and split it into words of ``vocabulary``.

    Raises:
        ValueError: A word is not in the vocabulary; the message names it, suggests the nearest word and lists
            the vocabulary.
    """
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    for word in words:
        if word not in vocabulary:
            near = difflib.get_close_matches(word, vocabulary, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"unknown word {word!r} in {text!r}{hint}; the vocabulary is: {', '.join(vocabulary)}")
    return words


class PromptReading(Protocol):
    """What a prompt reader makes of free text (``toyworld.prompts.read_prompt`` gives one)."""

    caption: str
    """The caption to encode instead of the prompt."""

    def note(self) -> str | None:
        """One line telling the user how the prompt was read, or None when it was taken as written."""
        ...


class ToyTextEncoder:
    """Encodes prompts of a closed vocabulary to ``[B, 24, 64]`` without trained weights, like umT5 in shape.

    Token ``i`` of a prompt is ``word_vector(word_i) + sinusoid(i)``, plus, with ``phrase_starts``, the sum of
    the word vectors of its phrase divided by the square root of the phrase's length. Word vectors are
    ``N(0, 1)`` draws from a CPU ``torch.Generator`` seeded with the CRC32 of the word, so they are the same on every
    machine and do not change when words are added to the vocabulary. Prompts are lower-cased and punctuation is
    dropped.

    Why phrases: the DiT's text embedding is per token, so without them "red" and "circle" reach it as unrelated
    tokens, and which colour goes with which shape can only be worked out by attention across text positions. umT5
    hands Wan contextual tokens; the phrase sum is the toy's fixed equivalent: every word of "a large red circle"
    carries the whole phrase.

    Args:
        vocabulary: every word a prompt may use (the toy world's: ``toyworld.VOCABULARY``).
        device: where :meth:`__call__` puts the embeddings.
        reader: turns free text into a caption of the vocabulary first (the embedded model reads ordinary prompts
            with ``toyworld.prompts.read_prompt``); without one, prompts must use the vocabulary.
        phrase_starts: words that begin a new phrase (the toy world's: ``toyworld.captions.PHRASE_STARTS``); empty:
            no phrase term (the encoding earlier toy weights were trained with).
    """

    text_len = TEXT_LEN
    text_dim = TEXT_DIM

    def __init__(self, vocabulary: Sequence[str], device: torch.device | str = "cpu",
                 reader: Callable[[str], PromptReading] | None = None,
                 phrase_starts: Collection[str] = ()) -> None:
        self.vocabulary = tuple(vocabulary)
        self.phrase_starts = frozenset(phrase_starts)
        self.device = device
        self.reader = reader
        self._index = {word: i for i, word in enumerate(self.vocabulary)}
        self._words = torch.stack([_word_vector(word) for word in self.vocabulary])  # [V, D]
        self._positions = _sinusoids(TEXT_LEN, TEXT_DIM)  # [L, D]

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """``[B, 24, 64]`` embeddings on :attr:`device` (the pipeline's text encoder interface); a ``reader``
        first turns each prompt into its caption."""
        if self.reader is not None:
            prompts = [self.reader(p).caption for p in prompts]
        return self.encode(prompts, self.device)

    def prepare(self, prompts: Sequence[str]) -> None:
        """Nothing to load: checks the prompts only."""
        self(list(prompts))

    def interpret(self, prompt: str) -> str | None:
        """How ``prompt`` is read, when the reader changed it (one line), else None."""
        return None if self.reader is None else self.reader(prompt).note()

    def encode(self, prompts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Encode prompts to float32 ``[B, 24, 64]``; the empty prompt gives all zeros.

        Raises:
            ValueError: A word outside the vocabulary (named, with the nearest word), or more than 24 words.
        """
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts, not a single string")
        out = torch.zeros(len(prompts), TEXT_LEN, TEXT_DIM)
        for row, prompt in enumerate(prompts):
            words = split_words(prompt, self.vocabulary)
            if len(words) > TEXT_LEN:
                raise ValueError(
                    f"prompt has {len(words)} words, the toy text encoder reads at most {TEXT_LEN}: {prompt!r}"
                )
            vectors = self._words[torch.tensor([self._index[word] for word in words], dtype=torch.long)]  # [n, D]
            out[row, : len(words)] = vectors + self._positions[: len(words)] + self._phrase_sums(words, vectors)
        return out.to(device)

    def _phrase_sums(self, words: list[str], vectors: torch.Tensor) -> torch.Tensor:
        """``[n, D]``: for each word, its phrase's word vectors summed and divided by sqrt(phrase length)."""
        out = torch.zeros_like(vectors)
        if not self.phrase_starts:
            return out
        starts = [i for i, word in enumerate(words) if i == 0 or word in self.phrase_starts] + [len(words)]
        for begin, end in zip(starts, starts[1:], strict=False):
            out[begin:end] = vectors[begin:end].sum(dim=0) / math.sqrt(end - begin)
        return out


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
