"""Procedural toy world: scenes, motion, rendering, captions and world-truth metrics."""

from relaxforcing.toyworld.captions import GRAMMAR, VOCABULARY, caption, caption_words, parse_caption
from relaxforcing.toyworld.metrics import WorldAnalysis, analyze, delta_e2000, world_metric_curves, world_metrics
from relaxforcing.toyworld.render import Tracks, render, render_batch, to_float
from relaxforcing.toyworld.scene import (
    BACKGROUND_COLORS,
    FPS,
    FRAME_SIZE,
    KINDS,
    OBJECT_COLORS,
    PATTERNS,
    SIZES,
    Background,
    Look,
    Scene,
)
from relaxforcing.toyworld.world import SPEED_RANGE, World, sample_world, world_from_caption

__all__ = [
    "BACKGROUND_COLORS",
    "FPS",
    "FRAME_SIZE",
    "GRAMMAR",
    "KINDS",
    "OBJECT_COLORS",
    "PATTERNS",
    "SIZES",
    "SPEED_RANGE",
    "VOCABULARY",
    "Background",
    "Look",
    "Scene",
    "Tracks",
    "World",
    "WorldAnalysis",
    "analyze",
    "caption",
    "caption_words",
    "delta_e2000",
    "parse_caption",
    "render",
    "render_batch",
    "sample_world",
    "to_float",
    "world_from_caption",
    "world_metric_curves",
    "world_metrics",
]
