"""Toy worlds: a scene plus start positions and velocities, with exact elastic-bounce trajectories."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from relaxforcing.toyworld.captions import caption, parse_caption
from relaxforcing.toyworld.scene import (
    BACKGROUND_COLORS,
    FRAME_SIZE,
    KINDS,
    MAX_OBJECTS,
    OBJECT_COLORS,
    PATTERNS,
    SIZES,
    Background,
    Look,
    Scene,
)

SPEED_RANGE = (0.75, 1.75)
"""Object speed in pixels per video frame (12 to 28 px/s at 16 fps); constant, since bounces are elastic."""
AXIS_MARGIN_DEG = 15.0
"""Directions stay this many degrees away from both axes, so objects always move in x and in y."""


@dataclass(frozen=True)
class World:
    """A scene in motion: each object starts at a centre and moves at a constant speed, bouncing off the walls.

    An object of half-extent ``r`` keeps its centre in ``[r, FRAME_SIZE - r]`` on both axes.
    """

    scene: Scene
    positions: tuple[tuple[float, float], ...]
    """Centre ``(x, y)`` of each object at frame 0, in pixels (pixel ``(i, j)`` spans ``[j, j+1) x [i, i+1)``)."""
    velocities: tuple[tuple[float, float], ...]
    """Velocity ``(vx, vy)`` of each object in pixels per video frame."""

    def __post_init__(self) -> None:
        n = len(self.scene.looks)
        if len(self.positions) != n or len(self.velocities) != n:
            raise ValueError(
                f"{n} objects need {n} positions and velocities, got {len(self.positions)} and {len(self.velocities)}"
            )
        for look, (x, y), (vx, vy) in zip(self.scene.looks, self.positions, self.velocities, strict=True):
            lo, hi = look.radius, FRAME_SIZE - look.radius
            if not (lo <= x <= hi and lo <= y <= hi):
                raise ValueError(f"{look.color} {look.kind} centre ({x}, {y}) is outside [{lo}, {hi}]^2")
            speed = float(np.hypot(vx, vy))
            if not (SPEED_RANGE[0] - 1e-9 <= speed <= SPEED_RANGE[1] + 1e-9) or vx == 0 or vy == 0:
                raise ValueError(
                    f"{look.color} {look.kind} velocity ({vx}, {vy}) must have speed in {SPEED_RANGE} "
                    "px/frame and move on both axes"
                )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: the caption (which fixes the scene) plus positions and velocities."""
        return {"caption": caption(self.scene), "positions": self.positions, "velocities": self.velocities}

    @property
    def radii(self) -> np.ndarray:
        """Half-extent of each object in pixels, ``[N]``."""
        return np.array([look.radius for look in self.scene.looks])

    def trajectory(self, num_frames: int, start_frame: int = 0) -> np.ndarray:
        """Exact object centres ``[T, N, 2]`` (x, y in pixels, float64) for frames ``start_frame + [0, T)``."""
        if num_frames < 0 or start_frame < 0:
            raise ValueError(f"num_frames and start_frame must be >= 0, got {num_frames} and {start_frame}")
        t = np.arange(start_frame, start_frame + num_frames, dtype=np.float64)[:, None, None]  # [T, 1, 1]
        free = np.asarray(self.positions) + t * np.asarray(self.velocities)  # [T, N, 2]
        r = self.radii[None, :, None]
        return reflect_into(free, r, FRAME_SIZE - r)


def world_from_dict(data: Mapping[str, object]) -> World:
    """Inverse of ``World.to_dict``."""

    def pairs(key: str) -> tuple[tuple[float, float], ...]:
        return tuple((float(x), float(y)) for x, y in data[key])

    return World(parse_caption(str(data["caption"])), pairs("positions"), pairs("velocities"))


def scene_of(spec: Scene | World | str | Mapping[str, object]) -> Scene:
    """The scene that a scene, a world, a caption, or a JSON dict with a ``caption`` key describes."""
    if isinstance(spec, Scene):
        return spec
    if isinstance(spec, World):
        return spec.scene
    if isinstance(spec, str):
        return parse_caption(spec)
    if isinstance(spec, Mapping) and isinstance(spec.get("caption"), str):
        return parse_caption(spec["caption"])
    raise ValueError(f"expected a Scene, World, caption or dict with a 'caption' string, got {type(spec).__name__}")


def reflect_into(u: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """Fold free-flight coordinates into ``[lo, hi]``: the position after any number of elastic bounces."""
    span = hi - lo
    m = np.mod(u - lo, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


def sample_world(seed: int, num_objects: int | None = None) -> World:
    """Draw a world from ``seed``: 1 to 3 objects (distinct colours), a background, positions and velocities.

    The scene and the motion come from separate streams, so
    ``world_from_caption(caption(w.scene), seed) == w`` for ``w = sample_world(seed)``.
    """
    rng = np.random.default_rng([seed, 0])
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if num_objects is None else num_objects
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"num_objects must be in 1..{MAX_OBJECTS}, got {num_objects}")
    colors = rng.choice(list(OBJECT_COLORS), size=n, replace=False)
    looks = tuple(Look(str(rng.choice(KINDS)), str(color), str(rng.choice(list(SIZES)))) for color in colors)
    background = Background(str(rng.choice(list(BACKGROUND_COLORS))), str(rng.choice(PATTERNS)))
    return _set_in_motion(Scene(looks, background), seed)


def world_from_caption(text: str, seed: int) -> World:
    """Build the world a caption describes; sizes it leaves out, positions and velocities come from ``seed``."""
    scene = parse_caption(text)
    rng = np.random.default_rng([seed, 2])
    looks = tuple(
        look if look.size is not None else replace(look, size=str(rng.choice(list(SIZES)))) for look in scene.looks
    )
    return _set_in_motion(replace(scene, looks=looks), seed)


def _set_in_motion(scene: Scene, seed: int) -> World:
    rng = np.random.default_rng([seed, 1])
    positions, velocities = [], []
    for look in scene.looks:
        x, y = rng.uniform(look.radius, FRAME_SIZE - look.radius, size=2)
        speed = rng.uniform(*SPEED_RANGE)
        angle = np.deg2rad(rng.uniform(AXIS_MARGIN_DEG, 90 - AXIS_MARGIN_DEG) + 90 * rng.integers(4))
        positions.append((float(x), float(y)))
        velocities.append((float(speed * np.cos(angle)), float(speed * np.sin(angle))))
    return World(scene, tuple(positions), tuple(velocities))
