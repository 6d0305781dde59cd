"""What a toy-world caption fixes: the closed vocabulary, object looks and the background."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

FRAME_SIZE = 64
"""Video height and width in pixels."""
FPS = 16
"""Video frames per second."""
MAX_OBJECTS = 3

KINDS = ("circle", "square", "triangle", "ring")
SIZES = {"small": 6.0, "large": 10.0}
"""Half-extent in pixels: circle/ring radius, square half-side, triangle circumradius."""
RING_INNER = 0.5
"""Ring inner radius as a fraction of its outer radius."""

OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (245, 225, 40),
    "green": (30, 170, 60),
    "cyan": (0, 200, 215),
    "blue": (35, 95, 255),
    "purple": (130, 25, 140),
    "pink": (255, 120, 200),
}
"""Exact sRGB of each object colour; pairwise CIE Lab ΔE76 >= 39, also against every background tone."""

BACKGROUND_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black": ((0, 0, 0), (45, 45, 45)),
    "gray": ((105, 105, 105), (150, 150, 150)),
    "white": ((240, 240, 240), (200, 200, 200)),
    "navy": ((20, 25, 80), (45, 55, 120)),
}
"""Two sRGB tones per background colour: plain backgrounds use the first, textures alternate both."""
PATTERNS = ("plain", "checkered", "striped")
CHECKER_CELL = 8
"""Checkerboard cell side in pixels."""
STRIPE_WIDTH = 6
"""Width in pixels of each diagonal stripe."""


@dataclass(frozen=True)
class Look:
    """One object as a caption names it."""

    kind: str
    """One of ``KINDS``."""
    color: str
    """One of ``OBJECT_COLORS``."""
    size: str | None = None
    """One of ``SIZES``; None when the caption leaves it open."""

    def __post_init__(self) -> None:
        _check_member("kind", self.kind, KINDS)
        _check_member("color", self.color, OBJECT_COLORS)
        if self.size is not None:
            _check_member("size", self.size, SIZES)

    @property
    def radius(self) -> float:
        """Half-extent in pixels; raises when the size is open."""
        if self.size is None:
            raise ValueError(f"{self.color} {self.kind} has no size; give one of {sorted(SIZES)}")
        return SIZES[self.size]

    @property
    def area(self) -> float:
        """Area in pixels of the fully visible shape."""
        return shape_area(self.kind, self.radius)


@dataclass(frozen=True)
class Background:
    """A static background: a named colour, plain or textured."""

    color: str
    """One of ``BACKGROUND_COLORS``."""
    pattern: str = "plain"
    """One of ``PATTERNS``."""

    def __post_init__(self) -> None:
        _check_member("background color", self.color, BACKGROUND_COLORS)
        _check_member("pattern", self.pattern, PATTERNS)

    def image(self) -> np.ndarray:
        """The background as uint8 sRGB ``[H, W, 3]``; it depends on colour and pattern only."""
        ij = np.arange(FRAME_SIZE)
        if self.pattern == "plain":
            tone = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.int64)
        elif self.pattern == "checkered":
            tone = (ij[:, None] // CHECKER_CELL + ij[None, :] // CHECKER_CELL) % 2
        else:
            tone = ((ij[:, None] + ij[None, :]) // STRIPE_WIDTH) % 2
        return np.asarray(BACKGROUND_COLORS[self.color], dtype=np.uint8)[tone]  # [H, W, 3]


@dataclass(frozen=True)
class Scene:
    """Objects in draw order (later ones occlude earlier ones) on a background."""

    looks: tuple[Look, ...]
    background: Background

    def __post_init__(self) -> None:
        if not 1 <= len(self.looks) <= MAX_OBJECTS:
            raise ValueError(f"a scene holds 1 to {MAX_OBJECTS} objects, got {len(self.looks)}")
        colors = [look.color for look in self.looks]
        if len(set(colors)) != len(colors):
            raise ValueError(f"object colours must be distinct (they identify objects), got {colors}")


def shape_area(kind: str, radius: float) -> float:
    """Area in pixels of a shape of the given kind and half-extent."""
    _check_member("kind", kind, KINDS)
    unit = {"circle": np.pi, "square": 4.0, "triangle": 3 * np.sqrt(3) / 4, "ring": np.pi * (1 - RING_INNER**2)}
    return float(unit[kind] * radius**2)


def _check_member(what: str, value: str, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
