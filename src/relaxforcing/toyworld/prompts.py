"""Free-text prompts read as toy-world scenes, so ordinary prompts drive the embedded model.

``read_prompt("Two green squares and a red circle moving on a dark background!")`` finds the objects (count, size,
colour, shape), any motion word (the world has one motion: bouncing) and the background, and returns the world's
canonical caption of that scene ("a green square, an orange square and a red circle bouncing on a black
background": the world never repeats a colour, so a repeated one becomes the next free colour) with the words it
did not use. A canonical caption reads back as itself, so a free-text prompt and its caption give the same video.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from relaxforcing.toyworld.captions import caption
from relaxforcing.toyworld.scene import (
    BACKGROUND_COLORS,
    KINDS,
    MAX_OBJECTS,
    OBJECT_COLORS,
    PATTERNS,
    SIZES,
    Background,
    Look,
    Scene,
)

SYNONYMS: dict[str, str] = {
    **{w: "large" for w in ("big", "huge", "giant", "larger", "bigger")},
    **{w: "small" for w in ("tiny", "little", "smaller", "mini")},
    **{f"{kind}s": kind for kind in KINDS},
    **{w: "circle" for w in ("ball", "balls", "disc", "discs", "disk", "disks", "dot", "dots", "blob", "blobs",
                             "sphere", "spheres", "orb", "orbs")},
    **{w: "square" for w in ("box", "boxes", "block", "blocks", "cube", "cubes", "rectangle", "rectangles")},
    **{w: "ring" for w in ("donut", "donuts", "doughnut", "doughnuts", "hoop", "hoops", "loop", "loops")},
    **{w: "checkered" for w in ("checked", "checker", "checkers", "checkerboard", "chequered", "checkerd")},
    **{w: "striped" for w in ("stripes", "stripy", "stripey", "stripe", "lined")},
    **{w: "plain" for w in ("solid", "flat", "uniform", "empty")},
    "grey": "gray", "silver": "gray", "violet": "purple", "magenta": "pink", "teal": "cyan", "aqua": "cyan",
    "turquoise": "cyan", "gold": "yellow", "golden": "yellow", "crimson": "red", "scarlet": "red", "lime": "green",
    "indigo": "navy",
}
"""Words read as a world word: sizes, plural and near-synonym shapes, colour names, pattern names."""
MOTION_WORDS = frozenset(
    "bouncing bounce bounces bouncy moving move moves sliding slide slides gliding glide glides drifting drift drifts "
    "flying fly flies floating float floats rolling roll rolls racing races zooming zoom zooms dancing dance dances "
    "wandering wander wanders running run runs travelling traveling jumping jump jumps spinning".split())
"""Motion words: the toy world has one motion (objects bounce off the walls), so every one means it."""
COUNTS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "a": 1, "an": 1,
          "single": 1, "pair": 2, "several": 3, "many": 3}
"""Count words before an object; more than the world's 3 objects are dropped and named as ignored."""
SHADES = {"dark": "black", "light": "white", "bright": None, "pale": None, "deep": None}
"""Shade words: before an object colour they are dropped; alone they name the background (dark -> black)."""
SILENT = frozenset({"a", "an", "and", "on", "background", "of", "the"})
"""Words the canonical caption uses anyway: never reported as ignored."""


@dataclass(frozen=True)
class ReadPrompt:
    """What the toy world makes of a prompt."""

    caption: str
    """The canonical caption of the scene (what the text encoder encodes)."""
    ignored: tuple[str, ...]
    """Words of the prompt that named nothing the world can draw."""
    changed: bool
    """Whether ``caption`` differs from the prompt as written (after lower-casing and dropping punctuation)."""

    def note(self) -> str | None:
        """One line for the user when the prompt was not already a caption, else None."""
        if not self.changed:
            return None
        ignored = f" (ignored: {', '.join(dict.fromkeys(self.ignored))})" if self.ignored else ""
        return f'toy model: drawing "{self.caption}"{ignored}'


def drawable() -> str:
    """What the toy world can draw, for error messages."""
    return (f"{', '.join(k + 's' for k in KINDS)} ({' or '.join(SIZES)}) in {', '.join(OBJECT_COLORS)}, on a "
            f"{', '.join(PATTERNS)} {', '.join(BACKGROUND_COLORS)} background")


def read_prompt(text: str) -> ReadPrompt:
    """Read ``text`` as a toy-world scene (see the module docstring).

    Raises:
        ValueError: the prompt names no shape the world can draw (one line listing what it can draw).
    """
    words = _words(text)
    looks: list[tuple[str | None, str | None, str]] = []  # (size, colour, kind) as named
    background, pattern, ignored = None, None, []
    size = color = None
    count = 1
    for i, raw in enumerate(words):
        word = SYNONYMS.get(raw, raw)
        following = SYNONYMS.get(words[i + 1], words[i + 1]) if i + 1 < len(words) else None
        if word in KINDS:
            looks += [(size, color, word)] * count
            size = color = None
            count = 1
        elif word in SIZES:
            size = word
        elif word in OBJECT_COLORS:
            color = word
        elif word in BACKGROUND_COLORS:
            background = background or word
        elif word in PATTERNS:
            pattern = pattern or word
        elif word in SHADES:
            if following in OBJECT_COLORS or SHADES[word] is None:
                ignored.append(raw)
            else:
                background = background or SHADES[word]
        elif word in COUNTS and (following in KINDS or following in SIZES or following in OBJECT_COLORS
                                 or following in SYNONYMS):
            count = COUNTS[word]
        elif word not in MOTION_WORDS and word not in SILENT:
            ignored.append(raw)
    if not looks:
        known = [*KINDS, *SYNONYMS, *OBJECT_COLORS, *BACKGROUND_COLORS, *SIZES, *PATTERNS]
        near = [m for w in ignored for m in difflib.get_close_matches(w, known, n=1, cutoff=0.75)]
        hint = f" (did you mean {SYNONYMS.get(near[0], near[0])!r}?)" if near else ""
        raise ValueError(f"{text!r} names nothing the toy model can draw{hint}; it draws {drawable()}")
    if len(looks) > MAX_OBJECTS:
        ignored += [f"{kind} #{n}" for n, (_, _, kind) in enumerate(looks[MAX_OBJECTS:], start=MAX_OBJECTS + 1)]
        looks = looks[:MAX_OBJECTS]
    free = [c for c in OBJECT_COLORS if c not in {c for _, c, _ in looks}]
    scene_looks, used = [], set()
    for size, color, kind in looks:
        if color is None or color in used:  # unnamed or repeated: the next colour the scene does not use
            color = free.pop(0)
        used.add(color)
        scene_looks.append(Look(kind, color, size))
    scene = Scene(tuple(scene_looks), Background(background or "black", pattern or "plain"))
    canonical = caption(scene)
    return ReadPrompt(canonical, tuple(ignored), _words(canonical) != words)


def _words(text: str) -> list[str]:
    """Lower-cased words without punctuation."""
    return re.sub(r"[^\w\s]", " ", text.lower()).split()
