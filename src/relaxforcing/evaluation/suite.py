"""Evaluates videos clip by clip (VBench-Long protocol) with the selected backends and writes the report."""

from __future__ import annotations

import importlib
import importlib.util
import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from relaxforcing.evaluation.appearance import delta_e76, mean_lab, sharpness
from relaxforcing.evaluation.backends import FEATURE_DIMENSIONS, ResolvedBackend, metric_name, resolve_backends
from relaxforcing.evaluation.clips import CLIP_SECONDS, clip_length_frames, iter_clips
from relaxforcing.evaluation.consistency import consistency_terms
from relaxforcing.evaluation.drift import DRIFT_FRACTION, start_end_drift, time_curve
from relaxforcing.evaluation.dynamic_degree import clip_dynamic_degree
from relaxforcing.evaluation.flicker import FREEZE_MAE, consecutive_mae, freeze_fraction, temporal_flickering
from relaxforcing.evaluation.report import write_report
from relaxforcing.evaluation.seam import seam_motion
from relaxforcing.evaluation.sink_collapse import SINK_VIDEO_FRAMES, lowest_late_distance, sink_distances
from relaxforcing.evaluation.smoothness import motion_smoothness
from relaxforcing.evaluation.video_io import iter_frames, probe_video, read_video

WEIGHT_FREE_METRICS = {
    "temporal_flickering": "VBench formula (255 - mean consecutive MAE) / 255, on every clip (no static filter)",
    "freeze_fraction": f"share of consecutive frame pairs with MAE < {FREEZE_MAE} (0-255 scale)",
    "colour_shift": "CIE76 distance of the clip's mean Lab colour from the first clip's",
    "sharpness": "variance of the grey-frame Laplacian, mean over the clip's frames",
    "sink_distance": f"LoL's sink-collapse distance: per frame, normalised L2 distance to the nearest of the first "
                     f"{SINK_VIDEO_FRAMES} frames, mean over the clip (a late dip toward 0 is a return to the start; "
                     "`lowest_late` is the minimum after the first 10% of frames)",
}
"""Metrics computed on every run, beside the registry backends."""

WORLD_METRICS_MODULE = "relaxforcing.toyworld.metrics"


def world_sidecar(video: Path) -> Path | None:
    """The toy-world sidecar of ``video``: ``<video>.world.json`` (``a.mp4.world.json``, else ``a.world.json``)."""
    for candidate in (video.with_name(video.name + ".world.json"), video.with_suffix(".world.json")):
        if candidate.is_file():
            return candidate
    return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def world_metrics_hook(video: Path) -> dict | None:
    """World-truth metrics for a toy-world video with a sidecar, via ``toyworld.metrics.world_metrics``.

    Returns None without a sidecar, and a ``missing`` entry while that module does not exist.
    """
    sidecar = world_sidecar(video)
    if sidecar is None:
        return None
    if not _importable(WORLD_METRICS_MODULE):
        return {"status": "missing", "sidecar": str(sidecar), "reason": f"{WORLD_METRICS_MODULE} is not importable"}
    world_metrics = importlib.import_module(WORLD_METRICS_MODULE).world_metrics
    frames, fps = read_video(video)
    world = json.loads(sidecar.read_text())
    return {"status": "ok", "sidecar": str(sidecar), "metrics": world_metrics(frames, world, fps=fps)}


def _entry(scores: Sequence[float], spans: Sequence[tuple[int, int]], num_frames: int, fps: float) -> dict:
    return {
        "status": "ok",
        "score": float(np.mean(scores)),
        "clip_scores": [float(s) for s in scores],
        "clip_spans": [list(s) for s in spans],
        "drift": asdict(start_end_drift(scores, spans, num_frames)),
        "curve_10s": [asdict(p) for p in time_curve(scores, spans, fps)],
    }


def _score_clip(resolved: ResolvedBackend, clip: np.ndarray, clip_fps: float,
                details: dict[str, object]) -> tuple[float, np.ndarray | None]:
    """One backend on one clip: ``(score, per-frame features or None)``."""
    dimension, impl = resolved.backend.dimension, resolved.impl
    if dimension == "dynamic_degree":
        result = clip_dynamic_degree(clip, clip_fps, impl)
        details.setdefault("pair_top5_px", []).append(result.pair_scores_px)
        details["params"] = asdict(result.params)
        return float(result.dynamic), None
    if dimension == "motion_smoothness":
        return motion_smoothness(clip, impl), None
    if dimension in FEATURE_DIMENSIONS:
        features = impl(clip)
        return float(consistency_terms(features).mean()), features[0]
    return float(np.mean(impl(clip))), None


def evaluate_video(video: Path, resolved: Mapping[str, ResolvedBackend]) -> dict:
    """All metrics of one video, streamed clip by clip; per metric: score, clip scores, drift and 10-s curve."""
    info = probe_video(video)
    clip_frames = clip_length_frames(info.fps, CLIP_SECONDS)
    clip_fps = float(int(info.fps))  # VBench-Long writes clips at int(fps); dynamic degree reads that rate back
    active = {m: r for m, r in resolved.items() if r.impl is not None}
    scores: dict[str, list[float]] = defaultdict(list)
    details: dict[str, dict[str, object]] = defaultdict(dict)
    first_features: dict[str, list[np.ndarray]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    spans: list[tuple[int, int]] = []
    first_lab = sinks = None
    distances: list[np.ndarray] = []  # per frame, to the sink frames
    for start, clip in iter_clips(iter_frames(video), clip_frames):
        if len(clip) < 3:
            raise ValueError(f"video {video} has {len(clip)} frames; evaluation needs at least 3")
        spans.append((start, start + len(clip)))
        tick = time.perf_counter()
        mae = consecutive_mae(clip)
        scores["temporal_flickering"].append(temporal_flickering(mae))
        scores["freeze_fraction"].append(freeze_fraction(mae))
        lab = mean_lab(clip).mean(axis=0)
        first_lab = lab if first_lab is None else first_lab
        scores["colour_shift"].append(float(delta_e76(lab, first_lab)))
        scores["sharpness"].append(float(sharpness(clip).mean()))
        sinks = clip[:SINK_VIDEO_FRAMES] if sinks is None else sinks
        distances.append(sink_distances(clip, sinks))
        scores["sink_distance"].append(float(distances[-1].mean()))
        seconds["weight_free_levels"] += time.perf_counter() - tick
        for metric, r in active.items():
            tick = time.perf_counter()
            score, first = _score_clip(r, clip, clip_fps, details[metric])
            scores[metric].append(score)
            if first is not None:
                first_features[metric].append(first)
            seconds[metric] += time.perf_counter() - tick
    num_frames = spans[-1][1]
    metrics = {m: _entry(s, spans, num_frames, info.fps) for m, s in scores.items()}
    for metric, entry in metrics.items():
        entry.update(details.get(metric, {}))
    per_frame = np.concatenate(distances)
    metrics["sink_distance"]["lowest_late"] = lowest_late_distance(per_frame)
    for metric, firsts in first_features.items():
        if len(firsts) >= 2:
            backend = active[metric].backend
            clip2clip = metric_name(f"{backend.dimension}_clip2clip", backend.name)
            metrics[clip2clip] = _entry(consistency_terms(np.stack(firsts)), spans[1:], num_frames, info.fps)
    for metric, r in resolved.items():
        if r.impl is None:
            metrics[metric] = {"status": "missing", "reason": r.missing}
    return {
        "path": str(video),
        "fps": info.fps,
        "num_frames": num_frames,
        "height": info.height,
        "width": info.width,
        "clip_frames": clip_frames,
        "num_clips": len(spans),
        "metrics": metrics,
        "seconds": dict(seconds),
        "world": world_metrics_hook(video),
    }


def _summary(videos: Sequence[dict]) -> dict[str, dict]:
    """Dataset level per metric: the flat mean over all clips of all videos (``reorganize_clips_results``)."""
    summary: dict[str, dict] = {}
    for video in videos:
        for metric, entry in video["metrics"].items():
            if entry["status"] != "ok":
                summary.setdefault(metric, {"status": "missing", "reason": entry["reason"]})
                continue
            item = summary.setdefault(metric, {"status": "ok", "clip_scores": []})
            item["clip_scores"].extend(entry["clip_scores"])
    for item in summary.values():
        if item["status"] == "ok":
            clip_scores = item.pop("clip_scores")
            item.update(score=float(np.mean(clip_scores)), num_clips=len(clip_scores))
    return summary


def _metric_catalogue(resolved: Mapping[str, ResolvedBackend]) -> dict[str, dict]:
    catalogue = {m: {"official": False, "description": d} for m, d in WEIGHT_FREE_METRICS.items()}
    for metric, r in resolved.items():
        backend = r.backend
        catalogue[metric] = {"official": backend.official, "description": backend.description}
        if backend.dimension in FEATURE_DIMENSIONS:
            catalogue[metric_name(f"{backend.dimension}_clip2clip", backend.name)] = {
                "official": False,
                "description": f"first+previous cosine over the clips' first frames, {backend.description} "
                               "(VBench-Long's slow branch uses DINOv2 / DreamSim and fuses it; not fused here)",
            }
    return catalogue


SEAM_WINDOW_SECONDS = 2.0
"""Frames compared on each side of a seam (``seam_at``)."""


def evaluate_videos(videos: Sequence[Path], backends: Mapping[str, str | Sequence[str]] | None = None,
                    weights: Mapping[str, Path] | None = None, seam_at: float | None = None) -> dict:
    """Evaluates each video; returns the results dict that :func:`run_eval` writes (see docs/evaluation.md).

    ``seam_at``: seconds where each video continues a given clip (``generate --extend``); adds the motion across
    that seam against the clip's own frame-to-frame motion (:mod:`relaxforcing.evaluation.seam`).
    """
    resolved = resolve_backends(backends, weights)
    tick = time.perf_counter()
    per_video = [evaluate_video(Path(v), resolved) for v in videos]
    if seam_at is not None:
        for entry in per_video:
            fps = entry["fps"]
            entry["seam"] = {"at_s": seam_at, **seam_motion(iter_frames(Path(entry["path"])), round(seam_at * fps),
                                                            round(SEAM_WINDOW_SECONDS * fps)).summary()}
    return {
        "protocol": {
            "clips": f"VBench-Long fixed-length split, {CLIP_SECONDS}-s clips of int(fps) * {CLIP_SECONDS} frames, "
                     "tail clip extended backwards; video score = mean of clip scores",
            "drift": f"|M(first {DRIFT_FRACTION:.0%}) - M(last {DRIFT_FRACTION:.0%})| over clip centres",
            "comparable_to_vbench": "only metrics whose catalogue entry has official = true",
        },
        "catalogue": _metric_catalogue(resolved),
        "summary": _summary(per_video),
        "videos": per_video,
        "seconds": time.perf_counter() - tick,
    }


def check_inputs(videos: Sequence[Path], out_dir: Path) -> list[Path]:
    """CLI-facing validation, before any work: readable video files and an output path that is not a file."""
    if not videos:
        raise ValueError("no videos given")
    paths = [Path(v) for v in videos]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"video not found: {path}")
        probe_video(path)
    if Path(out_dir).is_file():
        raise ValueError(f"output directory is an existing file: {out_dir}")
    return paths


def run_eval(videos: list[Path], out_dir: Path, backends: dict | None = None,
             weights: dict[str, Path] | None = None, seam_at: float | None = None) -> dict:
    """Evaluates ``videos`` and writes ``eval.json``, ``eval.md`` and ``plots/*.png`` under ``out_dir``.

    Raises:
        ValueError: a missing video, an output path that is a file, or bad ``backends`` / ``weights``
            (see :func:`~relaxforcing.evaluation.backends.resolve_backends`); messages are one line.
    """
    paths = check_inputs(videos, out_dir)
    results = evaluate_videos(paths, backends, weights, seam_at)
    results["outputs"] = {k: str(v) for k, v in write_report(results, Path(out_dir)).items()}
    return results
