"""Shape accuracy: detected masks classified by geometry against the world's renderer, on true, swapped and blob
video."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxforcing.toyworld import (
    KINDS,
    OBJECT_COLORS,
    SIZES,
    Background,
    Look,
    Scene,
    World,
    analyze,
    render,
    sample_world,
    world_metric_curves,
    world_metrics,
)
from relaxforcing.toyworld.metrics import MIN_SHAPE_IOU

FRAMES = 24


def reshaped(world: World, kinds: list[str]) -> World:
    """The same world (colours, sizes, motion) with other shapes."""
    looks = tuple(dataclasses.replace(look, kind=kind) for look, kind in zip(world.scene.looks, kinds, strict=True))
    return World(Scene(looks, world.scene.background), world.positions, world.velocities)


def alone(kind: str, size: str, background: Background) -> World:
    return World(Scene((Look(kind, "green", size),), background), ((30.3, 33.6),), ((1.1, 0.6),))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**40))
def test_ground_truth_shapes_are_recognised(seed: int) -> None:
    world = sample_world(seed)
    video, tracks = render(world, FRAMES)
    for truth in (tracks, None):
        analysis = analyze(video, world, truth)
        measured = np.isfinite(analysis.shape_correct)
        assert analysis.summary()["shape_accuracy"] >= 0.95 or not measured.any(), (seed, truth is None)
        assert np.array_equal(measured, np.isfinite(analysis.shape_iou).all(-1))


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("kind", KINDS)
def test_every_shape_and_size_is_recognised_on_every_background(kind: str, size: str) -> None:
    for background in (Background("black"), Background("white", "checkered"), Background("gray", "striped")):
        analysis = analyze(render(alone(kind, size, background), FRAMES)[0], alone(kind, size, background).scene)
        assert np.isfinite(analysis.shape_correct).all()  # alone: every frame is measured
        assert analysis.summary()["shape_accuracy"] == 1, background
        assert np.nanmin(analysis.shape_iou[..., KINDS.index(kind)]) > 0.85


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**40), shift=st.integers(1, len(KINDS) - 1))
def test_swapped_shapes_are_not_the_named_ones(seed: int, shift: int) -> None:
    world = sample_world(seed)
    kinds = [KINDS[(KINDS.index(look.kind) + shift) % len(KINDS)] for look in world.scene.looks]
    video, tracks = render(reshaped(world, kinds), FRAMES)
    for truth in (tracks, None):
        accuracy = world_metrics(video, world, truth)["shape_accuracy"]
        assert accuracy <= 0.05 or np.isnan(accuracy), (seed, shift, truth is None)


def test_accuracy_averages_objects_not_frames() -> None:
    scene = Scene((Look("ring", "red", "large"), Look("triangle", "blue", "small")), Background("navy"))
    world = World(scene, ((12.0, 14.0), (46.0, 14.0)), ((0.2, 0.75), (0.2, 0.75)))  # side by side, 34 px apart
    drawn = reshaped(world, ["ring", "square"])  # the blue triangle drawn as a square ...
    video, tracks = render(drawn, 48)
    video[16:] = render(World(Scene(drawn.scene.looks[:1], scene.background), world.positions[:1],
                              world.velocities[:1]), 48)[0][16:]  # ... and only for the first 16 frames
    analysis = analyze(video, world, tracks)
    assert np.isfinite(analysis.shape_correct).sum(0).tolist() == [48, 16]
    assert np.nanmean(analysis.shape_correct, 0).tolist() == [1.0, 0.0]
    assert analysis.summary()["shape_accuracy"] == 0.5  # not 48 / 64 over pooled frames


def blob_video(world: World, sigma: float | None) -> np.ndarray:
    """The world's one object redrawn in its colour as a soft blob of the same area: a Gaussian profile
    (``sigma=None``) or a disc blurred by ``sigma`` pixels."""
    look = world.scene.looks[0]
    background = world.scene.background.image().astype(np.float32)
    color = np.asarray(OBJECT_COLORS[look.color], dtype=np.float32)
    y, x = np.mgrid[: background.shape[0], : background.shape[1]] + 0.5
    frames = []
    for cx, cy in world.trajectory(FRAMES)[:, 0]:
        distance = np.hypot(x - cx, y - cy)
        if sigma is None:  # peak 1, the shape's area under it
            alpha = np.exp(-(distance**2) * np.pi / look.area)
        else:
            disc = np.clip(np.sqrt(look.area / np.pi) + 0.5 - distance, 0, 1).astype(np.float32)
            alpha = cv2.GaussianBlur(disc, (0, 0), sigma)
        frames.append((background + alpha[..., None] * (color - background)).round().astype(np.uint8))
    return np.stack(frames)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("background", [Background("black"), Background("white", "checkered")])
def test_a_blob_instead_of_a_square_is_a_circle_not_a_square(size: str, background: Background) -> None:
    world = alone("square", size, background)
    as_circle = dataclasses.replace(world.scene, looks=(Look("circle", "green", size),))
    for sigma in (None, 0.5, 1.0, 2.0, 3.0):
        video = blob_video(world, sigma)
        analysis = analyze(video, world.scene)
        assert np.isfinite(analysis.shape_correct).all(), sigma  # the blob is judged in every frame ...
        assert analysis.summary()["shape_accuracy"] == 0, sigma  # ... never as the named square ...
        assert world_metrics(video, as_circle)["shape_accuracy"] == 1, sigma  # ... but as the round thing it is


def test_a_smear_is_no_shape() -> None:
    world = alone("circle", "large", Background("black"))
    y, x = np.mgrid[:64, :64] + 0.5
    alpha = np.clip(0.5 + 7 * (1 - np.hypot((x - 32) / 14, (y - 31) / 7)), 0, 1)  # a 2:1 ellipse of the same area
    video = np.repeat((alpha[..., None] * OBJECT_COLORS["green"]).round().astype(np.uint8)[None], 4, 0)
    analysis = analyze(video, world.scene)
    assert np.isfinite(analysis.shape_iou).all() and analysis.shape_iou.max() < MIN_SHAPE_IOU
    assert analysis.summary()["shape_accuracy"] == 0


def test_occluded_frames_are_not_judged() -> None:
    scene = Scene((Look("circle", "red", "small"), Look("square", "blue", "large")), Background("gray"))
    world = World(scene, ((8.0, 30.0), (40.0, 32.0)), ((1.0, 0.3), (-0.7, -0.3)))
    video, tracks = render(world, 96)
    hidden = tracks.visibility[:, 0].numpy() < 0.999
    assert hidden.any()
    for truth in (tracks, None):
        analysis = analyze(video, world, truth)
        # The occluded circle is never judged; with tracks, nor is the square over it (without them, only while
        # the circle is seen: a wholly hidden one cannot spoil the square's shape).
        assert np.isnan(analysis.shape_correct[hidden, 0 if truth is None else slice(None)]).all()
        assert analysis.summary()["shape_accuracy"] == 1
        assert np.isfinite(analysis.shape_correct).any(0).all()
    curves = world_metric_curves(video, world, tracks)
    assert (curves["shape_accuracy"] == 1).all()  # per 1-s window too


def test_toy_codec_round_trip_keeps_shapes() -> None:
    """The ceiling for the toy model: ground truth through its codec (what the model draws with) still reads as
    the named shapes."""
    from relaxforcing.loaders import load_toy

    codec = load_toy().codec
    scores = []
    for seed in range(8):
        world = sample_world(seed)
        video, tracks = render(world, FRAMES)
        with torch.no_grad():
            decoded = codec.chunk_decoder().decode(codec.encode_frames(video[None]))[0]
        scores.append(world_metrics(decoded, world, tracks)["shape_accuracy"])
    assert np.nanmean(scores) >= 0.9, scores
