"""Toy world: sampling, bounce physics, rendering, captions, and world-truth metrics on clean and faulty video."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxforcing.toyworld import (
    FPS,
    FRAME_SIZE,
    OBJECT_COLORS,
    SPEED_RANGE,
    VOCABULARY,
    Background,
    Look,
    Scene,
    World,
    analyze,
    caption,
    delta_e2000,
    parse_caption,
    render,
    render_batch,
    sample_world,
    to_float,
    world_from_caption,
    world_metric_curves,
    world_metrics,
)
from relaxforcing.toyworld.world import world_from_dict

PROMPT = "a large red circle and a small blue square bouncing on a black background"
FRAMES = 320  # 20 s
CUT = 160  # fault injections start at 10 s


@pytest.fixture(scope="module")
def clip() -> tuple[World, np.ndarray, object]:
    world = world_from_caption(PROMPT, seed=3)
    video, tracks = render(world, FRAMES)
    return world, video.numpy(), tracks


def test_sample_world_is_deterministic_and_valid() -> None:
    assert sample_world(7) == sample_world(7)
    assert sample_world(7) != sample_world(8)
    for seed in range(50):
        world = sample_world(seed)
        speeds = np.hypot(*np.asarray(world.velocities).T)
        assert 1 <= len(world.scene.looks) <= 3
        assert np.all((speeds >= SPEED_RANGE[0] - 1e-9) & (speeds <= SPEED_RANGE[1] + 1e-9))
        assert np.all(np.asarray(world.velocities) != 0)
    assert len(sample_world(1, num_objects=3).scene.looks) == 3
    with pytest.raises(ValueError, match="num_objects"):
        sample_world(1, num_objects=4)


def test_objects_stay_inside_and_bounce() -> None:
    for seed in range(20):
        world = sample_world(seed)
        path = world.trajectory(960)  # [T, N, 2]
        r = world.radii[None, :, None]
        assert np.all(path >= r - 1e-9) and np.all(path <= FRAME_SIZE - r + 1e-9)
        step = np.diff(path, axis=0)
        speed = np.hypot(*np.asarray(world.velocities).T)
        assert np.all(np.linalg.norm(step, axis=-1) <= speed + 1e-9)  # a bounce only shortens a step
        assert np.all((np.diff(np.sign(step), axis=0) != 0).any(0))  # every object turns on both axes in 60 s
        # Away from the walls the motion is the constant velocity.
        free = np.isclose(np.linalg.norm(step, axis=-1), speed)
        assert free.mean() > 0.9


def test_trajectory_continues_from_start_frame() -> None:
    world = sample_world(4)
    np.testing.assert_allclose(world.trajectory(10, start_frame=30), world.trajectory(40)[30:])


def test_render_is_deterministic_and_batched() -> None:
    worlds = [sample_world(0, num_objects=1), sample_world(1, num_objects=3)]
    video, tracks = render(worlds[1], 12)
    again, _ = render(worlds[1], 12)
    assert video.shape == (12, FRAME_SIZE, FRAME_SIZE, 3) and video.dtype == torch.uint8
    assert torch.equal(video, again)
    batch, batch_tracks = render_batch(worlds, 12, start_frame=0)
    assert torch.equal(batch[1], video)
    assert torch.equal(batch[0], render(worlds[0], 12)[0])
    assert torch.isnan(batch_tracks.center[0, :, 1:]).all() and (batch_tracks.visibility[0, :, 1:] == 0).all()
    torch.testing.assert_close(batch_tracks.center[1], tracks.center)
    late, _ = render(worlds[1], 4, start_frame=8)
    assert torch.equal(late, video[8:])


def test_render_shows_the_world() -> None:
    world = World(
        Scene((Look("square", "green", "large"),), Background("white", "checkered")), ((20.0, 40.0),), ((1.0, 0.5),)
    )
    video, tracks = render(world, 2)
    assert tuple(video[0, 40, 20].tolist()) == OBJECT_COLORS["green"]  # centre pixel
    assert torch.equal(video[0, 0, 0], torch.tensor([240, 240, 240], dtype=torch.uint8))
    torch.testing.assert_close(tracks.center[1, 0], torch.tensor([21.0, 40.5]))
    assert (tracks.visibility == 1).all()
    x = to_float(video)
    assert x.shape == (2, 3, FRAME_SIZE, FRAME_SIZE) and x.min() >= -1 and x.max() <= 1


def test_visibility_drops_under_occlusion() -> None:
    scene = Scene((Look("circle", "red", "small"), Look("square", "blue", "large")), Background("gray"))
    world = World(scene, ((8.0, 30.0), (40.0, 32.0)), ((1.0, 0.3), (-0.7, -0.3)))
    _, tracks = render(world, 96)
    assert tracks.visibility[:, 0].min() < 0.5  # the small circle passes behind the square
    assert (tracks.visibility[:, 1] == 1).all()  # the square is drawn last


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**40), with_sizes=st.booleans())
def test_captions_round_trip(seed: int, with_sizes: bool) -> None:
    world = sample_world(seed)
    text = caption(world.scene, with_sizes=with_sizes)
    scene = parse_caption(text)
    expected = [(look.kind, look.color, look.size if with_sizes else None) for look in world.scene.looks]
    assert [(look.kind, look.color, look.size) for look in scene.looks] == expected
    assert scene.background == world.scene.background
    if with_sizes:
        assert world_from_caption(text, seed) == world
    assert world_from_dict(world.to_dict()) == world


def test_caption_grammar() -> None:
    text = "An orange Triangle, a small cyan ring and a pink circle bouncing on a striped navy background."
    scene = parse_caption(text)
    assert [look.color for look in scene.looks] == ["orange", "cyan", "pink"]
    assert scene.looks[1].size == "small" and scene.looks[0].size is None
    assert scene.background == Background("navy", "striped")
    assert caption(scene) == (
        "an orange triangle, a small cyan ring and a pink circle bouncing on a striped navy background"
    )
    world = world_from_caption(PROMPT.replace("large ", "").replace("small ", ""), seed=0)
    assert all(look.size is not None for look in world.scene.looks)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a grey circle bouncing on a black background", r"unknown word 'grey'.*did you mean 'gray'.*vocabulary"),
        ("a red bouncing on a black background", "expected a shape at word 3"),
        ("a red circle bouncing on a red background", "expected a background colour"),
        ("a red circle bouncing on a black background and", "expected the end"),
        ("a red circle and a red square bouncing on a black background", "distinct"),
        ("a red circle a blue circle a green circle a pink circle bouncing on a black background", "1 to 3"),
    ],
)
def test_caption_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_caption(text)


def test_vocabulary_lists_every_caption_word() -> None:
    words = {w for seed in range(200) for w in caption(sample_world(seed).scene).replace(",", "").split()}
    assert words <= set(VOCABULARY)


def test_delta_e2000_matches_sharma_reference() -> None:
    # Pairs 1, 3 and 19 of Sharma, Wu & Dalal (2005), Table 1.
    lab1 = np.array([[50, 2.6772, -79.7751], [50, 2.8361, -74.02], [50, 2.5, 0]])
    lab2 = np.array([[50, 0, -82.7485], [50, 0, -82.7485], [56, -27, -3]])
    np.testing.assert_allclose(delta_e2000(lab1, lab2), [2.0425, 3.4412, 31.9030], atol=1e-4)


def test_metrics_are_perfect_on_ground_truth(clip) -> None:
    world, video, tracks = clip
    for truth in (tracks, None):
        m = world_metrics(video, world, truth)
        assert m["persistence"] == 1 and m["persistence_all"] == 1 and m["first_vanish_s"] == math.inf
        assert m["shape_accuracy"] == 1 and m["freeze_rate"] == 0
        assert m["physics_error_px"] < 0.05
        assert m["color_error_de00"] < 0.1 and m["color_drift_de00"] < 0.1
        assert m["background_error_de76"] < 0.01
    m = world_metrics(video, world, tracks)
    assert m["track_error_px"] < 0.05
    assert abs(m["motion_retention"] - 1) < 0.01
    assert abs(m["motion_retention_late"] - 1) < 0.01
    assert m["speed_px_s"] == pytest.approx(np.mean(np.hypot(*np.asarray(world.velocities).T)) * FPS, rel=0.02)


def test_metrics_stay_clean_across_worlds() -> None:
    for seed in range(6):
        world = sample_world(seed)
        video, tracks = render(world, 96)
        m = world_metrics(video, world.scene, tracks)
        assert m["persistence"] == 1 and m["shape_accuracy"] == 1 and m["freeze_rate"] == 0, seed
        assert m["physics_error_px"] < 0.15 and m["track_error_px"] < 0.1, seed
        assert m["color_error_de00"] < 0.5 and m["background_error_de76"] < 0.1, seed
        assert world_metrics(video, caption(world.scene))["persistence"] == 1, seed  # occlusion-aware without tracks


def test_frozen_tail_raises_freeze_rate(clip) -> None:
    world, video, tracks = clip
    frozen = video.copy()
    frozen[CUT:] = frozen[CUT]
    m = world_metrics(frozen, world, tracks)
    assert m["freeze_rate"] == pytest.approx((FRAMES - CUT) / FRAMES, abs=0.03)
    assert m["motion_retention"] == pytest.approx(CUT / FRAMES, abs=0.03)
    assert m["motion_retention_late"] < 0.01 and m["motion_retention_early"] > 0.99
    early = world_metrics(frozen, world, tracks, until_seconds=CUT / FPS)
    assert early["freeze_rate"] == 0 and early["seconds"] == CUT / FPS


def test_duplicated_frames_flag_motion(clip) -> None:
    world, video, tracks = clip
    stop_motion = np.repeat(video[::4], 4, axis=0)  # each latent frame's 4 video frames identical
    assert world_metrics(stop_motion, world, tracks)["freeze_rate"] > 0.95
    slow = np.repeat(video[: FRAMES // 2], 2, axis=0)  # every frame shown twice: half speed
    m = world_metrics(slow, world, tracks)
    assert m["motion_retention"] == pytest.approx(0.5, abs=0.03)
    assert m["physics_error_px"] > 0.5


def test_hue_ramp_raises_colour_drift(clip) -> None:
    world, video, tracks = clip
    hsv = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2HSV) for frame in video]).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + np.linspace(0, 10, FRAMES).round().astype(np.int32)[:, None, None]) % 180
    shifted = np.stack([cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_HSV2RGB) for frame in hsv])
    m = world_metrics(shifted, world, tracks)
    assert m["persistence"] == 1
    assert m["color_drift_de00"] > 5 and m["color_error_late_de00"] > m["color_error_early_de00"] + 5
    curve = world_metric_curves(shifted, world, tracks)["color_error_de00"]
    assert curve[-1] > curve[0] + 5


def test_deleted_object_lowers_persistence(clip) -> None:
    world, video, tracks = clip
    alone = World(Scene(world.scene.looks[:1], world.scene.background), world.positions[:1], world.velocities[:1])
    deleted = video.copy()
    deleted[CUT:] = render(alone, FRAMES)[0].numpy()[CUT:]  # the blue square is gone from frame CUT on
    for truth in (tracks, None):
        analysis = analyze(deleted, world, truth)
        m = analysis.summary()
        assert m["first_vanish_s"] == pytest.approx(CUT / FPS, abs=1 / FPS)
        assert m["persistence_min"] == pytest.approx(CUT / FRAMES, abs=0.02)
        assert analysis.present[:, 0].all()  # the red circle is untouched
    assert world_metrics(deleted, world, tracks, until_seconds=CUT / FPS)["persistence"] == 1


def test_noise_ramp_and_corruption_raise_background_error(clip) -> None:
    world, video, tracks = clip
    sigma = np.linspace(0, 30, FRAMES)[:, None, None, None]
    noisy = np.clip(video + np.random.default_rng(0).normal(size=video.shape) * sigma, 0, 255).astype(np.uint8)
    m = world_metrics(noisy, world, tracks)
    assert m["background_error_late_de76"] > m["background_error_early_de76"] + 5
    patched = video.copy()
    patched[CUT:, :16, :16] = (90, 60, 30)
    curve = world_metric_curves(patched, world, tracks, window_seconds=1.0)
    assert curve["time_s"][0] == 1.0 and curve["time_s"][-1] == FRAMES / FPS
    assert np.all(curve["background_error_de76"][: CUT // FPS] < 0.01)
    assert np.all(curve["background_error_de76"][CUT // FPS :] > 1)


def test_metrics_accept_upscaled_video_and_captions(clip) -> None:
    world, video, tracks = clip
    big = np.repeat(np.repeat(video, 2, axis=1), 2, axis=2)
    m = world_metrics(torch.from_numpy(big), {"caption": PROMPT}, tracks)
    assert m["persistence"] == 1 and m["track_error_px"] < 0.05
    with pytest.raises(ValueError, match="uint8 video"):
        world_metrics(video[..., 0], world)


def test_image_start_clips_open_on_a_still_whose_latent_frame_is_given_and_not_scored():
    """A clip trained as ``generate --image`` starts a video: its first latent frame covers 4 copies of its first
    video frame (what a picture encodes to), and enters the first chunk clean (t = 0) without being scored."""
    from types import SimpleNamespace

    from relaxforcing.codecs.toy_autoencoder import ToyAutoencoder
    from relaxforcing.toyworld.train import ToyData, flow_matching_loss, open_on_a_still

    video = torch.randn(2, 12, 3, 8, 8)
    opened = open_on_a_still(video)
    assert opened.shape == video.shape and torch.equal(opened[:, 4:], video[:, 1:-3])
    assert torch.equal(opened[:, :4], video[:, :1].expand(-1, 4, -1, -1, -1))
    codec = ToyAutoencoder().eval()
    assert ToyData(torch.device("cpu"), 0).batch(2, codec)[2] is None  # off: the data stream is as before
    assert ToyData(torch.device("cpu"), 0, image_start=1.0).batch(2, codec)[2].tolist() == [True, True]

    class Recorder:
        config = SimpleNamespace(chunk_frames=3)

        def forward_teacher_forcing(self, clean, noisy, t, context):
            self.t, self.noisy = t, noisy
            self.out = torch.zeros_like(noisy, requires_grad=True)
            return self.out

    model, latents = Recorder(), torch.randn(2, 4, 6, 2, 2)
    flow_matching_loss(model, latents, None, torch.Generator().manual_seed(0), torch.tensor([True, False])).backward()
    assert model.t[0, 0] == 0 and (model.t[0, 1:] > 0).all() and (model.t[1] > 0).all()
    assert torch.equal(model.noisy[0, :, 0], latents[0, :, 0])
    grad = model.out.grad
    assert not grad[0, :, 0].any() and (grad[0, :, 1:] != 0).all() and (grad[1] != 0).all()


@pytest.mark.e2e
def test_training_warm_starts_from_exported_weights_and_exports_again(tmp_path):
    """One CPU step from the shipped weights: the run starts at those weights, keeps their codec, and exports a
    loadable model whose sidecar remembers the training it started from."""
    from safetensors.torch import load_file

    from relaxforcing.loaders import load_toy, toy_weights_dir
    from relaxforcing.runner import generate_videos
    from relaxforcing.toyworld.train import TrainConfig, export, train

    config = TrainConfig(steps=1, batch=2, warmup=1, ema=0.0)
    result = train(tmp_path / "run", config, time_budget=600, device="cpu", init_from=toy_weights_dir())
    assert result == {"step": 1, "done": True}
    export(tmp_path / "run", tmp_path / "out", config)
    shipped = load_file(str(toy_weights_dir() / "toy.safetensors"))
    new = load_file(str(tmp_path / "out" / "toy.safetensors"))
    assert shipped.keys() == new.keys() and any(not torch.equal(shipped[k], new[k]) for k in shipped)  # it trained
    codec = load_file(str(tmp_path / "out" / "toy_codec.safetensors"))
    shipped_codec = load_file(str(toy_weights_dir() / "toy_codec.safetensors"))
    assert all(torch.equal(v, shipped_codec[k]) for k, v in codec.items())
    meta = json.loads((tmp_path / "out" / "toy.json").read_text())
    shipped_training = json.loads((toy_weights_dir() / "toy.json").read_text())["training"]
    assert meta["training"]["step"] == 1 and meta["training"]["warm_started_from"] == shipped_training
    stats = generate_videos(load_toy(weights_dir=tmp_path / "out"), ["a red circle on a black background"], [0], 0.75,
                            [tmp_path / "v.mp4"])
    assert stats.video_frames == 12


@pytest.mark.e2e
def test_stopped_training_saves_its_step_and_resumes_there(tmp_path):
    """A stop request (Ctrl-C/SIGTERM) ends training after the current step with a checkpoint to resume from."""
    from relaxforcing.loaders import toy_weights_dir
    from relaxforcing.toyworld.train import TrainConfig, train

    config = TrainConfig(steps=2, batch=2, warmup=1)
    polls = iter([None, "SIGTERM"])  # polled before each step: the first step runs, the second is not begun
    stopped = train(tmp_path / "run", config, time_budget=600, device="cpu", init_from=toy_weights_dir(),
                    stop_requested=lambda: next(polls))
    assert stopped == {"step": 1, "done": False}
    saved = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert saved["step"] == 1 and not (tmp_path / "run" / "state.tmp").exists()
    assert train(tmp_path / "run", config, time_budget=600, device="cpu") == {"step": 2, "done": True}


@pytest.mark.e2e
def test_sigterm_stops_train_toy_with_a_checkpoint_and_the_resume_hint(tmp_path):
    from relaxforcing.loaders import toy_weights_dir

    run = tmp_path / "run"
    command = [sys.executable, "-m", "relaxforcing", "train-toy", "--device", "cpu", "--batch", "2", "--steps", "500",
               "--run-dir", str(run), "--init-from", str(toy_weights_dir())]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "init.json").exists():  # written once the weights are in, just before the first step
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    step = torch.load(run / "state.pt", weights_only=True)["step"]
    assert 0 <= step < 500  # a slow machine may not have finished the first step
    assert f"error: interrupted (SIGTERM) at step {step} of 500; the checkpoint is saved in {run}" in stderr
