"""Evaluation metrics: VBench rules, flow calibration, and known-answer fault injections on synthetic video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaxforcing.evaluation import (
    calibrate_flow,
    check_move,
    clip_dynamic_degree,
    clip_length_frames,
    clip_spans,
    consecutive_mae,
    consistency_terms,
    dis_flow,
    dynamic_degree_params,
    evaluate_videos,
    farneback_flow,
    flow_interpolator,
    freeze_fraction,
    iter_clips,
    motion_smoothness,
    probe_video,
    read_video,
    run_eval,
    start_end_drift,
    temporal_flickering,
    time_curve,
    write_video,
)
from relaxforcing.evaluation.calibration import texture
from relaxforcing.evaluation.dynamic_degree import top_magnitude_mean
from relaxforcing.evaluation.sink_collapse import lowest_late_distance, sink_distances
from relaxforcing.evaluation.synthetic import freeze_from, hue_ramp, moving_shapes, noise_ramp

FPS, SIZE, FRAMES = 16, 128, 96  # 6 s: three 2-s clips of 32 frames
SPEED = 3  # px per frame: 6 px per sampled pair, DD threshold at 128 px is 3 px


def shapes(**kwargs) -> np.ndarray:
    return np.stack(list(moving_shapes(FRAMES, SIZE, SIZE, SPEED, **kwargs)))


# --- clipping (vbench2_beta_long/utils.py::split_video_into_clips) ---------------------------------------------

def test_clip_length_truncates_fps() -> None:
    assert clip_length_frames(16) == 32
    assert clip_length_frames(23.976) == 46
    assert clip_length_frames(30, seconds=10) == 300


def test_clip_spans_exact_multiple() -> None:
    assert clip_spans(960, 32) == [(32 * i, 32 * i + 32) for i in range(30)]


def test_clip_spans_tail_extended_backwards() -> None:
    spans = clip_spans(957, 32)
    assert len(spans) == 30 and spans[:29] == [(32 * i, 32 * i + 32) for i in range(29)]
    assert spans[-1] == (925, 957)


def test_clip_spans_short_video_is_one_clip() -> None:
    assert clip_spans(20, 32) == [(0, 20)]


@settings(max_examples=60, deadline=None)
@given(num_frames=st.integers(1, 200), clip_frames=st.integers(1, 50))
def test_iter_clips_streams_the_spans(num_frames: int, clip_frames: int) -> None:
    frames = np.arange(num_frames).reshape(num_frames, 1, 1, 1)
    streamed = [(start, clip[:, 0, 0, 0].tolist()) for start, clip in iter_clips(iter(frames), clip_frames)]
    expected = [(a, list(range(a, b))) for a, b in clip_spans(num_frames, clip_frames)]
    assert streamed == expected


# --- dynamic degree (vbench/dynamic_degree.py) ------------------------------------------------------------------

def test_dynamic_degree_params_for_832x480_at_16fps() -> None:
    params = dynamic_degree_params(16, 480, 832, num_sampled=16)
    assert (params.interval, params.thres_px, params.count_num) == (2, 11.25, 4)


def test_dynamic_degree_params_low_fps_raise_threshold() -> None:
    params = dynamic_degree_params(4, 256, 256, num_sampled=10)
    assert (params.interval, params.thres_px, params.count_num) == (1, 12.0, 2)  # round(2.5) = 2, as in Python


def test_check_move_counts_strictly_greater() -> None:
    assert not check_move([3.0, 3.0, 3.0], 3.0, 1)
    assert check_move([1.0, 3.1, 0.0, 3.2], 3.0, 2)
    assert not check_move([], 3.0, 0)


def test_top_magnitude_mean_takes_top_five_percent() -> None:
    flow = np.zeros((20, 20, 2), np.float32)
    flow.reshape(-1, 2)[:20] = (3.0, 4.0)  # exactly 5% of 400 pixels move 5 px
    assert top_magnitude_mean(flow) == pytest.approx(5.0)


def test_clip_dynamic_degree_moving_vs_static() -> None:
    clip = shapes()[:32]
    moving = clip_dynamic_degree(clip, FPS, dis_flow())
    assert moving.dynamic and min(moving.pair_scores_px) > 4.0
    assert len(moving.pair_scores_px) == 15
    assert not clip_dynamic_degree(np.repeat(clip[:1], 32, axis=0), FPS, dis_flow()).dynamic


@pytest.mark.parametrize("make_flow", [dis_flow, farneback_flow])
def test_flow_calibration_within_five_percent(make_flow) -> None:
    for point in calibrate_flow(make_flow(), [1.5, 3.0, 6.0, 11.25], height=240, width=416):
        assert 0.95 <= point.ratio <= 1.05, point
        assert point.median_px == pytest.approx(point.shift_px, rel=0.01)


def test_dis_calibration_at_the_832x480_threshold() -> None:
    (point,) = calibrate_flow(dis_flow(), [11.25], height=480, width=832)
    assert point.ratio == pytest.approx(1.0, abs=0.05)


# --- flicker, smoothness, consistency, drift ---------------------------------------------------------------------

def test_temporal_flickering_formula() -> None:
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[1::2] = 10
    mae = consecutive_mae(frames)
    assert mae.tolist() == [10.0, 10.0, 10.0]
    assert temporal_flickering(mae) == pytest.approx(245 / 255)
    assert freeze_fraction(consecutive_mae(np.zeros((5, 8, 8, 3), np.uint8))) == 1.0


def test_motion_smoothness_flow_beats_linear_blend_on_translation() -> None:
    big = texture(96, 128, seed=3)
    frames = np.stack([big[:, 2 * t : 2 * t + 96] for t in range(9)])  # content moves 2 px left per frame
    flow_score = motion_smoothness(frames, flow_interpolator(dis_flow()))
    blend_score = motion_smoothness(frames, lambda a, b: ((a.astype(np.float32) + b) / 2 + 0.5).astype(np.uint8))
    assert flow_score > 0.99 > blend_score
    assert motion_smoothness(np.repeat(frames[:1], 5, axis=0), flow_interpolator(dis_flow())) == 1.0
    with pytest.raises(ValueError, match="at least 3 frames"):
        motion_smoothness(frames[:2], flow_interpolator(dis_flow()))


def test_consistency_terms_first_and_previous() -> None:
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    # t=1: prev 0, first 0; t=2: prev 1, first 0; t=3: prev 0, first max(0, -1) = 0
    assert consistency_terms(features).tolist() == [0.0, 0.5, 0.0]


def test_drift_uses_first_and_last_fifteen_percent() -> None:
    spans = [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160), (160, 192), (192, 224)]
    drift = start_end_drift([1.0, 1.0, 0.9, 0.9, 0.9, 0.5, 0.3], spans, num_frames=224)
    assert (drift.start, drift.end, drift.delta) == pytest.approx((1.0, 0.3, 0.7))
    curve = time_curve([1.0, 0.0, 1.0], [(0, 32), (32, 64), (160, 192)], fps=16, bin_seconds=10)
    assert [(p.t0_s, p.value, p.num_clips) for p in curve] == [(0.0, 0.5, 2), (10.0, 1.0, 1)]


# --- fault injection through the whole suite ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("faults")
    videos = {
        "clean": iter(shapes()),
        "freeze": freeze_from(iter(shapes()), 40),
        "hue": hue_ramp(iter(shapes()), FRAMES, 120.0),
        "noise": noise_ramp(iter(shapes()), FRAMES, 30.0),
        "delete": iter(shapes(delete_shape_at=48)),
        "return": iter(np.concatenate([shapes()[:70], shapes()[:FRAMES - 70]])),  # back to the first frames
    }
    paths = {name: root / f"{name}.mp4" for name in videos}
    for name, frames in videos.items():
        write_video(paths[name], frames, FPS)
    results = evaluate_videos(list(paths.values()), backends={"dynamic_degree": ["dis", "farneback"]})
    return {name: video["metrics"] for name, video in zip(videos, results["videos"], strict=True)}


def test_clean_video_is_stable_on_every_metric(faults) -> None:
    clean = faults["clean"]
    assert clean["dynamic_degree[dis]"]["score"] == 1.0
    assert clean["dynamic_degree[farneback]"]["score"] == 1.0
    assert clean["freeze_fraction"]["score"] == 0.0
    assert clean["motion_smoothness[flow]"]["score"] > 0.98
    assert clean["subject_consistency[hist]"]["score"] > 0.95
    assert clean["background_consistency[hist]"]["score"] > 0.97
    for metric in ("temporal_flickering", "motion_smoothness[flow]", "subject_consistency[hist]",
                   "background_consistency[hist]"):
        assert clean[metric]["drift"]["delta"] < 0.01, metric
    for metric in ("subject_consistency_clip2clip[hist]", "background_consistency_clip2clip[hist]"):
        assert clean[metric]["drift"]["delta"] < 0.02, metric  # two terms, first frames 2 s apart
    assert clean["colour_shift"]["drift"]["delta"] < 0.5


def test_freeze_drops_dynamic_degree_and_raises_freeze_fraction(faults) -> None:
    frozen, clean = faults["freeze"], faults["clean"]
    for backend in ("dis", "farneback"):
        assert frozen[f"dynamic_degree[{backend}]"]["clip_scores"][-1] == 0.0
        assert frozen[f"dynamic_degree[{backend}]"]["score"] < clean[f"dynamic_degree[{backend}]"]["score"]
    assert frozen["freeze_fraction"]["clip_scores"][-1] > 0.95
    assert frozen["freeze_fraction"]["drift"]["delta"] > 0.95


def test_hue_ramp_shows_as_colour_drift(faults) -> None:
    hue, clean = faults["hue"], faults["clean"]
    assert hue["colour_shift"]["drift"]["delta"] > 5.0
    for metric in ("subject_consistency_clip2clip[hist]", "background_consistency_clip2clip[hist]"):
        assert hue[metric]["score"] < clean[metric]["score"] - 0.05, metric
    assert hue["dynamic_degree[dis]"]["score"] == 1.0


def test_noise_ramp_shows_as_flicker(faults) -> None:
    noise, clean = faults["noise"], faults["clean"]
    assert noise["temporal_flickering"]["clip_scores"][-1] < clean["temporal_flickering"]["clip_scores"][-1] - 0.03
    assert noise["temporal_flickering"]["drift"]["delta"] > 0.03
    assert noise["motion_smoothness[flow]"]["drift"]["delta"] > 0.02


def test_a_return_to_the_first_frames_shows_as_sink_collapse(faults) -> None:
    back, clean = faults["return"], faults["clean"]
    assert back["sink_distance"]["lowest_late"] < 0.5 * clean["sink_distance"]["lowest_late"]  # 0.03 vs 0.07
    assert back["sink_distance"]["clip_scores"][-1] < clean["sink_distance"]["clip_scores"][-1] - 0.02
    assert back["sink_distance"]["clip_scores"][0] == clean["sink_distance"]["clip_scores"][0]


def test_sink_distances_are_normalised_and_take_the_nearest_sink() -> None:
    sinks = np.stack([np.full((2, 2), 10.0), np.full((2, 2), 20.0)])
    frames = np.stack([np.full((2, 2), 10.0), np.full((2, 2), 12.0), np.full((2, 2), 25.0)])
    assert sink_distances(frames, sinks) == pytest.approx([0.0, 0.2, 0.25])
    assert lowest_late_distance(np.array([0.0, 0.5, 0.4, 0.3, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0])) == 0.3
    with pytest.raises(ValueError, match="must match per frame"):
        sink_distances(frames, np.zeros((1, 3, 2)))


def test_object_deletion_drops_subject_consistency(faults) -> None:
    deleted, clean = faults["delete"], faults["clean"]
    # shape 0 vanishes at frame 48, inside clip 1 ([32, 64))
    drop = clean["subject_consistency[hist]"]["clip_scores"][1] - deleted["subject_consistency[hist]"]["clip_scores"][1]
    assert drop > 0.01
    assert deleted["subject_consistency_clip2clip[hist]"]["clip_scores"][-1] < (
        clean["subject_consistency_clip2clip[hist]"]["clip_scores"][-1] - 0.03)


# --- end to end: files, missing backends, validation ------------------------------------------------------------

@pytest.fixture(scope="module")
def small_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "small.mp4"
    write_video(path, moving_shapes(40, 64, 96, 2), FPS)
    return path


def test_video_io_round_trip(small_video: Path) -> None:
    info = probe_video(small_video)
    assert (info.fps, info.height, info.width) == (16.0, 64, 96)
    frames, fps = read_video(small_video, stride=3)
    assert frames.shape == (14, 64, 96, 3) and frames.dtype == np.uint8 and fps == 16.0


def test_run_eval_writes_report_and_marks_missing(small_video: Path, tmp_path: Path) -> None:
    results = run_eval([small_video], tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    video = saved["videos"][0]
    assert video["num_clips"] == 2 and video["metrics"]["dynamic_degree[dis]"]["clip_spans"] == [[0, 32], [8, 40]]
    for metric, key in [("dynamic_degree[raft]", "raft"), ("motion_smoothness[amt]", "amt"),
                        ("subject_consistency[dino]", "dino"), ("background_consistency[clip]", "clip_b32"),
                        ("aesthetic_quality[laion]", "laion_head"), ("imaging_quality[musiq]", "musiq")]:
        assert video["metrics"][metric]["status"] == "missing"
        assert f"weights['{key}']" in video["metrics"][metric]["reason"]
        assert saved["summary"][metric]["status"] == "missing"
    markdown = (tmp_path / "out" / "eval.md").read_text()
    assert "| `imaging_quality[musiq]` | yes | missing |" in markdown
    assert Path(results["outputs"]["plot_0"]).stat().st_size > 0
    assert video["world"] is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"videos": []}, "no videos given"),
    ({"videos": ["nope.mp4"]}, "video not found: nope.mp4"),
    ({"backends": {"dynamic_degree": ["raftt"]}}, "unknown backend 'raftt' for dynamic_degree"),
    ({"backends": {"dynamism": ["dis"]}}, "unknown dimension 'dynamism'"),
    ({"weights": {"dino_v2": "x"}}, "unknown weights key 'dino_v2'"),
    ({"weights": {"raft": "/nonexistent/raft.pt"}}, "weights\\['raft'\\] not found"),
])
def test_run_eval_rejects_bad_input(small_video: Path, tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"videos": [small_video], "out_dir": tmp_path, "backends": None, "weights": None} | kwargs
    with pytest.raises(ValueError, match=message):
        run_eval(**args)


def test_run_eval_rejects_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    with pytest.raises(ValueError, match="cannot read video .*fake.mp4"):
        run_eval([fake], tmp_path / "out")
    assert not (tmp_path / "out").exists()
