"""Captions of toy-world scenes and their parser (a closed grammar)."""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

from relaxforcing.text.toy import split_words
from relaxforcing.toyworld.scene import (
    BACKGROUND_COLORS,
    KINDS,
    OBJECT_COLORS,
    PATTERNS,
    SIZES,
    Background,
    Look,
    Scene,
)

ARTICLES = ("a", "an")
LINKS = ("and", "bouncing", "on", "background")
VOCABULARY: tuple[str, ...] = tuple(
    sorted({*ARTICLES, *LINKS, *SIZES, *OBJECT_COLORS, *KINDS, *PATTERNS, *BACKGROUND_COLORS})
)
"""Every word a caption may use (after lower-casing and dropping punctuation)."""
PHRASE_STARTS = (*ARTICLES, "and", "bouncing", "on")
"""Words that open a phrase of a caption ("a large red circle", "and", "bouncing", "on", "a striped gray
background"): the toy text encoder mixes each phrase into its words."""
GRAMMAR = (
    "a [small|large] <colour> <shape> [, or and] ... (1 to 3 objects) "
    "bouncing on a [plain|checkered|striped] <background colour> background"
)


def caption(scene: Scene, with_sizes: bool = True) -> str:
    """Describe a scene, e.g. "a large red circle and a small blue square bouncing on a black background".

    Args:
        scene: Objects in draw order and the background.
        with_sizes: Name object sizes (sizes that are None are never named).
    """
    phrases = []
    for look in scene.looks:
        size = f"{look.size} " if with_sizes and look.size is not None else ""
        phrases.append(f"{_article(size + look.color)} {size}{look.color} {look.kind}")
    objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    pattern = "" if scene.background.pattern == "plain" else f"{scene.background.pattern} "
    background = f"{pattern}{scene.background.color}"
    return f"{objects} bouncing on {_article(background)} {background} background"


def caption_words(text: str) -> list[str]:
    """Lower-case ``text``, drop punctuation and split it into vocabulary words (ValueError names an unknown
    word, with the nearest one)."""
    return split_words(text, VOCABULARY)


def parse_caption(text: str) -> Scene:
    """Parse a caption of the closed grammar ``GRAMMAR`` back into a scene (sizes left out become None).

    Raises:
        ValueError: Unknown word, a word out of grammatical place, more than 3 objects or a repeated colour.
    """
    cursor = _Cursor(caption_words(text), text)
    looks = []
    while True:
        cursor.take(ARTICLES, "'a' or 'an'")
        size = cursor.take_optional(SIZES)
        color = cursor.take(OBJECT_COLORS, "an object colour")
        kind = cursor.take(KINDS, "a shape")
        looks.append(Look(kind, color, size))
        if cursor.take_optional(("bouncing",)):
            break
        cursor.take_optional(("and",))
    cursor.take(("on",), "'on'")
    cursor.take(ARTICLES, "'a' or 'an'")
    pattern = cursor.take_optional(PATTERNS) or "plain"
    color = cursor.take(BACKGROUND_COLORS, "a background colour")
    cursor.take(("background",), "'background'")
    cursor.expect_end()
    return Scene(tuple(looks), Background(color, pattern))


def _article(next_words: str) -> str:
    return "an" if next_words[0] in "aeiou" else "a"


class _Cursor:
    """Reads caption words left to right and explains the first one out of place."""

    def __init__(self, words: list[str], text: str) -> None:
        self.words, self.text, self.index = words, text, 0

    def take_optional(self, allowed: Collection[str]) -> str | None:
        if self.index < len(self.words) and self.words[self.index] in allowed:
            self.index += 1
            return self.words[self.index - 1]
        return None

    def take(self, allowed: Collection[str], what: str) -> str:
        word = self.take_optional(allowed)
        if word is None:
            self._fail(what)
        return word

    def expect_end(self) -> None:
        if self.index < len(self.words):
            self._fail("the end of the caption")

    def _fail(self, what: str) -> NoReturn:
        got = repr(self.words[self.index]) if self.index < len(self.words) else "the end"
        raise ValueError(f"expected {what} at word {self.index + 1} of {self.text!r}, got {got}; grammar: {GRAMMAR}")
