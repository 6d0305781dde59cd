"""Evaluation report: one JSON with every number, a Markdown table, and metric-vs-time plots per video."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _jsonable(value: object) -> object:
    """NumPy scalars/arrays and paths to JSON; NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(results: dict, path: Path) -> Path:
    """Writes ``results`` as indented, strict JSON (no NaN)."""
    path.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n")
    return path


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry["status"] != "ok":
        return "missing"
    drift = entry.get("drift")
    return f"{entry['score']:.4f}" + (f" (Δ {drift['delta']:.4f})" if drift else "")


def markdown_report(results: dict) -> str:
    """One row per metric: dataset score, then each video's score with its start-end drift Δ."""
    videos = results["videos"]
    catalogue = results["catalogue"]
    header = ["metric", "official", "all videos"] + [Path(v["path"]).name for v in videos]
    lines = ["# Evaluation", "",
             f"Protocol: {results['protocol']['clips']}. Drift Δ: {results['protocol']['drift']}.",
             "Only rows with official = yes are comparable to published VBench numbers.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in catalogue:
        summary = results["summary"].get(metric)
        official = "yes" if catalogue.get(metric, {}).get("official") else "no"
        all_videos = "-" if summary is None else (
            f"{summary['score']:.4f}" if summary["status"] == "ok" else "missing")
        row = [f"`{metric}`", official, all_videos] + [_cell(v["metrics"].get(metric)) for v in videos]
        lines.append("| " + " | ".join(row) + " |")
    seams = [(Path(v["path"]).name, v["seam"]) for v in videos if "seam" in v]
    if seams:
        lines += ["", f"## Seam at {seams[0][1]['at_s']:g} s (continued clips)", "",
                  "Mean optical-flow magnitude (px/frame) across the seam, against the clip's own frame-to-frame "
                  "motion before it and the continuation's after it.", "",
                  "| video | seam | before: mean | before: max | after: mean | after: max | within spread |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {s['seam_px']:.3f} | {s['before_mean_px']:.3f} | {s['before_max_px']:.3f} | "
                  f"{s['after_mean_px']:.3f} | {s['after_max_px']:.3f} | {'yes' if s['within_spread'] else 'no'} |"
                  for name, s in seams]
    missing = {m: s["reason"] for m, s in results["summary"].items() if s["status"] != "ok"}
    if missing:
        lines += ["", "## Missing", ""] + [f"- `{m}`: {reason}" for m, reason in missing.items()]
    lines += ["", "## Metrics", ""] + [f"- `{m}`: {c['description']}" for m, c in catalogue.items()]
    lines += ["", f"Evaluation time: {results['seconds']:.1f} s for {len(videos)} video(s)."]
    return "\n".join(lines) + "\n"


def plot_video_metrics(video: dict, path: Path) -> Path:
    """One panel per computed metric of ``video``: clip score against clip centre time (s)."""
    entries = {m: e for m, e in video["metrics"].items() if e["status"] == "ok"}
    cols = 4
    rows = max(1, math.ceil(len(entries) / cols))
    fig = Figure(figsize=(4 * cols, 2.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (metric, entry) in zip(axes, entries.items(), strict=False):
        times = [(start + stop) / 2 / video["fps"] for start, stop in entry["clip_spans"]]
        ax.plot(times, entry["clip_scores"], marker=".", linewidth=1)
        ax.set_title(f"{metric}  Δ={entry['drift']['delta']:.3g}", fontsize=8)
        ax.set_xlabel("time (s)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes[len(entries) :]:
        ax.set_visible(False)
    fig.suptitle(Path(video["path"]).name, fontsize=10)
    fig.savefig(path, dpi=100)
    return path


def write_report(results: dict, out_dir: Path) -> dict[str, Path]:
    """Writes ``eval.json``, ``eval.md`` and ``plots/NN_<stem>.png``; returns the paths by name."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    outputs = {"json": out_dir / "eval.json", "markdown": out_dir / "eval.md"}
    for i, video in enumerate(results["videos"]):
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(video["path"]).stem)
        outputs[f"plot_{i}"] = plot_video_metrics(video, plots / f"{i:02d}_{stem}.png")
    (out_dir / "eval.md").write_text(markdown_report(results))
    write_json({**results, "outputs": {k: str(v) for k, v in outputs.items()}}, outputs["json"])
    return outputs
