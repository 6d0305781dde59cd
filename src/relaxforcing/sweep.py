"""`relaxforcing sweep`: memory policies and sizes side by side — generate, evaluate, compare (Table 1, Fig. 2)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import torch
import typer

from relaxforcing.codecs.base import parse_vae_tiles
from relaxforcing.distributed import process_group, shard, world
from relaxforcing.evaluation.backends import check_weights, metric_name
from relaxforcing.evaluation.cli import key_value_pairs, parse_weights
from relaxforcing.evaluation.suite import run_eval
from relaxforcing.interrupts import Interrupted, stop_on_signals
from relaxforcing.loaders import load_pipeline, random_pipeline, with_vae_tiles
from relaxforcing.memory.policies import build_policy, parse_memory_spec
from relaxforcing.model.config import WanConfig
from relaxforcing.options import CompileOption, OffloadOption, VaeTilesOption
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.prompts import read_prompts, slug
from relaxforcing.resume import Snapshots
from relaxforcing.runner import Stopped, generate_videos
from relaxforcing.snapshot import STATE_FILE, clear_snapshot, load_snapshot
from relaxforcing.toyworld.prompts import read_prompt

__all__ = [
    "Job",
    "SWEEP_COLUMNS",
    "Setting",
    "WORLD_COLUMNS",
    "build_jobs",
    "build_settings",
    "canonical_spec",
    "comparison",
    "comparison_markdown",
    "parse_grid",
    "parse_memory",
    "parse_seeds",
    "plot_memory_size",
    "register",
    "sweep_command",
    "write_comparison",
]

SWEEP_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Subject": ("subject_consistency", ("dino", "hist")),
    "Background": ("background_consistency", ("clip", "hist")),
    "Aesthetic": ("aesthetic_quality", ("laion",)),
    "Imaging": ("imaging_quality", ("musiq",)),
    "MotionSmooth": ("motion_smoothness", ("amt", "flow")),
    "DynamicDegree": ("dynamic_degree", ("raft", "dis")),
}
"""Table 1 column -> (VBench dimension, backends in order of preference: official first, then the proxy)."""

WORLD_COLUMNS = {
    "Persistence": "persistence",
    "ShapeAccuracy": "shape_accuracy",
    "ColourDrift": "color_drift_de00",
    "MotionRetention": "motion_retention",
    "FreezeRate": "freeze_rate",
}
"""World-truth column -> key of ``toyworld.metrics.world_metrics`` (toy-model videos only)."""

SWEEP_SNAPSHOT_EVERY = 10
"""Chunks between two saves of an unfinished sweep video's state (as ``generate --snapshot-every``)."""


# ---- argument parsing ---------------------------------------------------------------------------------------


def parse_seeds(raw: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``."""
    try:
        seeds = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers, got {raw!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct integers >= 0, got {raw!r}")
    return seeds


def parse_memory(items: Sequence[str]) -> list[str]:
    """Memory specs from comma-separated and/or repeated values, keeping each spec's own parameters together.

    ``["relax:sink=2,lambda=1.5,dense", "sink"]`` -> ``["relax:sink=2,lambda=1.5", "dense", "sink"]``: a
    ``key=value`` token without a ``name:`` continues the spec before it.
    """
    specs: list[str] = []
    for item in items:
        first = True
        for token in (t.strip() for t in item.split(",")):
            if not token:
                continue
            if "=" in token and ":" not in token.partition("=")[0]:
                if first:
                    raise ValueError(f"--memory {item!r}: {token!r} has no policy name before it (name:key=value)")
                specs[-1] += f",{token}"
            else:
                specs.append(token)
            first = False
    if not specs:
        raise ValueError("--memory names no policy")
    for spec in specs:
        build_policy(spec)
    return specs


def parse_grid(items: Sequence[str] | None) -> list[tuple[str, list[str]]]:
    """``["sink=1,2,4", "tail=1,3"]`` -> ``[("sink", ["1", "2", "4"]), ("tail", ["1", "3"])]``."""
    grid: list[tuple[str, list[str]]] = []
    for param, values in key_value_pairs(items, "--grid"):
        points = [v.strip() for v in values.split(",") if v.strip()]
        if not points:
            raise ValueError(f"--grid {param}= lists no values")
        if param in {p for p, _ in grid}:
            raise ValueError(f"--grid {param} is given twice")
        grid.append((param, points))
    return grid


# ---- settings and jobs --------------------------------------------------------------------------------------


def canonical_spec(spec: str, chunk_frames: int = 3) -> str:
    """The shortest spec that rebuilds the same policy: only parameters that differ from their defaults.

    ``relax:sink=2`` (the default) -> ``relax``; ``relax:lambda=1`` -> ``relax:lambda_redundancy=1.0``.
    """
    policy = build_policy(spec, chunk_frames)
    default = type(policy)(chunk_frames=chunk_frames)
    changed = [f"{f.name}={getattr(policy, f.name)}" for f in fields(policy)
               if f.name != "chunk_frames" and getattr(policy, f.name) != getattr(default, f.name)]
    return f"{policy.name}:{','.join(changed)}" if changed else policy.name


@dataclass(frozen=True)
class Setting:
    """One row of the comparison: a memory spec as asked for, and the canonical spec whose videos it reads."""

    label: str
    """The spec as the user wrote it (``--memory``) or as a grid point built it (``relax:sink=4``)."""
    spec: str
    """:func:`canonical_spec` of ``label``; rows with the same spec share their videos."""
    param: str | None = None
    """The varied parameter for grid rows, None for ``--memory`` rows."""
    value: str | None = None
    """The grid value of ``param``."""

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.spec)


def build_settings(memory: Sequence[str], grid: Sequence[tuple[str, Sequence[str]]]) -> list[Setting]:
    """``--memory`` rows, then for each grid parameter one row per value on the first ``--memory`` policy.

    A grid point keeps the first policy's other parameters (its own overrides, else the defaults), as in the
    paper's Fig. 2 where one of sink / history / tail varies at a time.
    """
    settings = [Setting(spec, canonical_spec(spec)) for spec in memory]
    if grid:
        name, base = parse_memory_spec(memory[0])
        for param, values in grid:
            for value in values:
                overrides = {**base, param: value}
                label = f"{name}:" + ",".join(f"{k}={v}" for k, v in overrides.items())
                settings.append(Setting(label, canonical_spec(label), param, value))
    return settings


@dataclass(frozen=True)
class Job:
    """One video of the sweep: a canonical memory spec, a prompt and a seed."""

    spec: str
    prompt: str
    seed: int
    video: Path
    eval_dir: Path

    @property
    def gen_record(self) -> Path:
        return self.video.with_name(self.video.name + ".gen.json")

    @property
    def world_record(self) -> Path:
        return self.video.with_name(self.video.name + ".world.json")

    @property
    def state_dir(self) -> Path:
        """The unfinished video's saved stream state (removed once the video is whole)."""
        return self.video.with_name(self.video.stem + ".state")


def build_jobs(settings: Sequence[Setting], prompts: Sequence[str], seeds: Sequence[int], out: Path) -> list[Job]:
    """One job per distinct canonical spec x prompt x seed, in row order."""
    jobs, seen = [], set()
    for setting in settings:
        if setting.spec in seen:
            continue
        seen.add(setting.spec)
        for index, prompt in enumerate(prompts):
            for seed in seeds:
                name = f"p{index:03d}_{slug(prompt)}_s{seed}"
                jobs.append(Job(setting.spec, prompt, seed, out / "videos" / setting.folder / f"{name}.mp4",
                                out / "eval" / setting.folder / name))
    return jobs


# ---- sweep steps --------------------------------------------------------------------------------------------


def _check_record(job: Job, seconds: float, checkpoint: str | None) -> None:
    """An existing video must come from the same prompt, seed, length and checkpoint, or it is not reused."""
    if not job.gen_record.is_file():
        return
    record = json.loads(job.gen_record.read_text())
    wanted = {"prompt": job.prompt, "seed": job.seed, "video_seconds": seconds, "checkpoint": checkpoint}
    for key, value in wanted.items():
        if record.get(key) != value:
            raise ValueError(f"{job.video} was made with {key}={record.get(key)!r}, not {value!r}; "
                             "use another --out or delete it")


def _generate(pipe: VideoPipeline, job: Job, seconds: float, checkpoint: str | None,
              stop: Callable[[], str | None]) -> dict:
    """Writes the video under a temporary name and renames it when complete, so an existing video is whole.

    The stream's state is saved in ``job.state_dir`` every ``SWEEP_SNAPSHOT_EVERY`` chunks and when ``stop()``
    answers; a later run continues from it (raises :class:`~relaxforcing.runner.Stopped` when stopped).
    """
    job.video.parent.mkdir(parents=True, exist_ok=True)
    partial = job.video.with_name(job.video.stem + ".partial.mp4")
    resume = load_snapshot(job.state_dir) if (job.state_dir / STATE_FILE).is_file() else None
    stats = generate_videos(pipe, [job.prompt], [job.seed], seconds, [partial], memory=job.spec,
                            snapshots=Snapshots(job.state_dir, every=SWEEP_SNAPSHOT_EVERY), resume=resume,
                            stop_requested=stop)
    record = {"prompt": job.prompt, "seed": job.seed, "memory": job.spec, "video_seconds": seconds,
              "checkpoint": checkpoint, "model": pipe.name,
              "device": str(next(pipe.model.parameters()).device), "torch_threads": torch.get_num_threads(),
              "load_average_1m": os.getloadavg()[0], "generation": stats.to_dict(),
              "resumed_at_chunk": None if resume is None else resume.meta["chunk_index"]}
    job.gen_record.write_text(json.dumps(record, indent=1) + "\n")
    if checkpoint is None:  # toy model: the caption fixes the scene, so world-truth metrics can run
        scene = read_prompt(job.prompt).caption  # what the toy model drew for a free-text prompt
        job.world_record.write_text(json.dumps({"caption": scene, "seed": job.seed}) + "\n")
    os.replace(partial, job.video)
    clear_snapshot(job.state_dir)
    return record


def _sweep_backends() -> dict[str, list[str]]:
    return {dimension: list(names) for dimension, names in SWEEP_COLUMNS.values()}


def _eval_key(job: Job, weights: dict[str, Path] | None) -> dict:
    stat = job.video.stat()
    return {"video_bytes": stat.st_size, "video_mtime_ns": stat.st_mtime_ns, "backends": _sweep_backends(),
            "weights": {k: str(v) for k, v in sorted((weights or {}).items())}}


def _evaluated(job: Job, weights: dict[str, Path] | None) -> bool:
    key_path = job.eval_dir / "sweep_key.json"
    return (job.video.is_file() and (job.eval_dir / "eval.json").is_file() and key_path.is_file()
            and json.loads(key_path.read_text()) == _eval_key(job, weights))


def _evaluate(job: Job, weights: dict[str, Path] | None) -> None:
    run_eval([job.video], job.eval_dir, backends=_sweep_backends(), weights=weights)
    (job.eval_dir / "sweep_key.json").write_text(json.dumps(_eval_key(job, weights), indent=1) + "\n")


def _run_jobs(mine: Sequence[Job], out: Path, seconds: float, checkpoint: str | None,
              weights: dict[str, Path] | None, load: Callable[[list[str]], VideoPipeline], tag: str) -> None:
    """Generates this rank's missing videos and evaluates its videos; ``load(prompts)`` runs only if one is missing.
    ``checkpoint`` names the weights (None: the embedded toy model, whose videos also get world-truth records).

    The first Ctrl-C or SIGTERM ends the run after the current chunk (the video's state is saved) or evaluation:
    :class:`~relaxforcing.interrupts.Interrupted` says to rerun the same command.
    """
    for job in mine:
        if job.video.is_file():
            _check_record(job, seconds, checkpoint)
    todo = [job for job in mine if not job.video.is_file()]
    pipe = load(list(dict.fromkeys(job.prompt for job in todo))) if todo else None
    with stop_on_signals() as stop:
        for number, job in enumerate(mine, start=1):
            name = job.video.relative_to(out)
            if job not in todo:
                print(f"{tag}[{number}/{len(mine)}] skip {name} (exists)", flush=True)
            else:
                try:
                    record = _generate(pipe, job, seconds, checkpoint, stop)
                except Stopped as stopped:
                    raise Interrupted(f"{tag}{stopped} of {name}; its state is in {job.state_dir.relative_to(out)}; "
                                      "run the same command again to continue", stopped.signal) from None
                stats, resumed = record["generation"], record["resumed_at_chunk"]
                print(f"{tag}[{number}/{len(mine)}] wrote {name} ("
                      + (f"resumed after chunk {resumed}, " if resumed is not None else "")
                      + f"{stats['video_frames']} frames, {stats['fps']:.2f} fps)", flush=True)
            if not _evaluated(job, weights):
                tick = time.perf_counter()
                _evaluate(job, weights)
                print(f"{tag}    evaluated in {time.perf_counter() - tick:.1f} s", flush=True)
            if stop() and number < len(mine):
                raise Interrupted(f"{tag}interrupted ({stop()}) after {number} of {len(mine)} videos; the finished "
                                  "ones are kept; run the same command again to continue", stop())


# ---- comparison table ---------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def _percent(values: Sequence[float | None]) -> float | None:
    mean = _mean(values)
    return None if mean is None else 100 * mean


def _column_metrics(videos: Sequence[dict]) -> dict[str, str | None]:
    """Per column, the first preferred metric that is ok in every evaluated video (None: missing everywhere)."""
    chosen: dict[str, str | None] = {}
    for column, (dimension, names) in SWEEP_COLUMNS.items():
        metrics = [metric_name(dimension, n) for n in names]
        chosen[column] = next((m for m in metrics if videos and all(
            v["metrics"].get(m, {}).get("status") == "ok" for v in videos)), None)
    return chosen


def comparison(settings: Sequence[Setting], jobs: Sequence[Job], meta: dict) -> dict:
    """Table 1 layout from the per-video ``eval.json`` and ``.gen.json`` files: one row per setting.

    Quality columns are the flat mean over all clips of the row's videos (VBench-Long's dataset rule), x 100;
    FPS is the mean generation throughput; world columns are the mean over videos of ``world_metrics``.
    """
    by_spec: dict[str, list[Job]] = {}
    for job in jobs:
        by_spec.setdefault(job.spec, []).append(job)
    evals = {job.video: json.loads((job.eval_dir / "eval.json").read_text())["videos"][0] for job in jobs}
    columns = _column_metrics(list(evals.values()))
    available = [c for c, m in columns.items() if m is not None]
    first_label: dict[str, str] = {}
    rows = []
    for setting in settings:
        videos = [evals[j.video] for j in by_spec[setting.spec]]
        records = [json.loads(j.gen_record.read_text()) if j.gen_record.is_file() else {}
                   for j in by_spec[setting.spec]]
        scores = {c: None if m is None else _percent([s for v in videos for s in v["metrics"][m]["clip_scores"]])
                  for c, m in columns.items()}
        worlds = [v["world"]["metrics"] for v in videos if (v.get("world") or {}).get("status") == "ok"]
        rows.append({
            "label": setting.label, "spec": setting.spec, "param": setting.param, "value": setting.value,
            "same_videos_as": first_label.setdefault(setting.spec, setting.label),
            "fps": _mean([r.get("generation", {}).get("fps") for r in records]),
            "scores": scores,
            "avg": _mean([scores[c] for c in available]),
            "world": {c: _mean([w.get(k) for w in worlds]) for c, k in WORLD_COLUMNS.items()} if worlds else None,
            "videos": [str(j.video) for j in by_spec[setting.spec]],
            "sink_distance": _sink_distance(videos),
            "per_video": {c: [_percent(v["metrics"][m]["clip_scores"]) for v in videos]
                          for c, m in columns.items() if m is not None}
                         | {c: [w.get(k) for w in worlds] for c, k in WORLD_COLUMNS.items() if worlds},
        })
    missing = [c for c in SWEEP_COLUMNS if columns[c] is None]
    lengths = sorted({(v["num_frames"], v["fps"]) for v in evals.values()})
    return {**meta, "video_frames": [f for f, _ in lengths], "video_fps": sorted({r for _, r in lengths}),
            "columns": columns, "avg_over": available, "missing_columns": missing, "rows": rows}


def _sink_distance(videos: Sequence[dict]) -> dict | None:
    """The row's sink-collapse distance (``eval``'s ``sink_distance``): per clip centre (seconds) the mean over its
    videos, and the mean of their lowest late values (None for evaluations made without it)."""
    entries = [v["metrics"].get("sink_distance") for v in videos]
    if not entries or any(e is None or e.get("status") != "ok" for e in entries):
        return None
    fps = videos[0]["fps"]
    centres = [(a + b) / 2 / fps for a, b in entries[0]["clip_spans"]]
    per_clip = [sum(scores) / len(scores) for scores in zip(*(e["clip_scores"] for e in entries), strict=True)]
    return {"time_s": centres, "clip_means": per_clip,
            "lowest_late": _mean([e["lowest_late"] for e in entries])}


def plot_sink_distance(table: dict, path: Path) -> Path | None:
    """Sink-collapse curves: per setting (each set of videos once), the mean distance of its clips to the first
    frames over time; a late dip toward 0 is a return to the start."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in table["rows"] if r.get("sink_distance") and r["same_videos_as"] == r["label"]]
    if not rows:
        return None
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for row in rows:
        ax.plot(row["sink_distance"]["time_s"], row["sink_distance"]["clip_means"], marker=".", linewidth=1,
                label=row["label"])
    ax.set_xlabel("clip centre (s)", fontsize=8)
    ax.set_ylabel("distance to the first frames", fontsize=8)
    ax.set_title("sink collapse (LoL): normalised L2 distance of each 2-s clip to the first 5 frames", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def comparison_markdown(table: dict) -> str:
    """The comparison as Markdown: the table, then what each column is and what it cannot show."""
    columns, rows = table["columns"], table["rows"]
    world = any(r["world"] for r in rows)
    header = ["Setting", "FPS", *SWEEP_COLUMNS, "Avg"] + (list(WORLD_COLUMNS) if world else [])
    lines = ["# Memory comparison", "",
             f"{len(table['prompts'])} prompt(s) x seeds {table['seeds']} per setting, --seconds {table['seconds']:g} "
             f"({'/'.join(map(str, table['video_frames']))} frames at {'/'.join(f'{r:g}' for r in table['video_fps'])} "
             f"fps), model: {table['model']}; {table['protocol']}.", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        label = f"`{row['label']}`" + ("" if row["same_videos_as"] == row["label"]
                                        else f" (= `{row['same_videos_as']}`)")
        cells = [label, _fmt(row["fps"])]
        cells += ["missing" if columns[c] is None else _fmt(row["scores"][c]) for c in SWEEP_COLUMNS]
        cells.append(_fmt(row["avg"]))
        if world:
            w = row["world"] or {}
            cells += [_fmt(w.get(c), 3) for c in WORLD_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    used = ", ".join(f"{c} = `{m}`" for c, m in columns.items() if m is not None)
    lines += ["", "Notes:", "",
              f"- Columns: {used}. A metric is comparable to VBench / the paper's Table 1 only if it is the "
              "official backend (`[raft]`, `[amt]`, `[dino]`, `[clip]`, `[laion]`, `[musiq]`); `[dis]`, `[flow]` "
              "and `[hist]` are weight-free proxies (docs/evaluation.md)."]
    if table["missing_columns"]:
        lines.append(f"- Missing (no local weights given): {', '.join(table['missing_columns'])}. Avg is the mean "
                     f"of the {len(table['avg_over'])} available quality columns ({', '.join(table['avg_over'])}), "
                     "so it is not Table 1's 6-column mean.")
    else:
        lines.append("- Avg is the plain mean of the six quality columns, as in Table 1.")
    lines.append(f"- FPS: video frames per wall-clock second of generation (denoising, decoding, mp4 writing), "
                 f"mean over the row's videos, measured on {table['devices']} when each video was made; "
                 f"1-min load average after each generation: {table['load_average']}.")
    if world:
        lines.append("- World truth (toy model; from the caption, no ground-truth tracks): Persistence = share of "
                     "frames an object is present; ShapeAccuracy = share of judged frames (whole, apart from the "
                     "others) where an object's mask fits its named shape best among the world's four; "
                     "ColourDrift = ΔE2000 of object colour, first vs last 15%; MotionRetention = detected / "
                     "expected distance travelled; FreezeRate = share of 0.25-s windows where an object moves under "
                     "20% of the expected speed. Mean over videos.")
    if any(r["same_videos_as"] != r["label"] for r in rows):
        lines.append("- A row marked (= `other`) is the same policy as that row and reuses its videos.")
    return "\n".join(lines) + "\n"


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_memory_size(table: dict, path: Path) -> Path | None:
    """Fig. 2 style: one panel per metric, one line per varied parameter, x = the parameter's value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    groups: dict[str, list[dict]] = {}
    for row in table["rows"]:
        if row["param"] is not None:
            groups.setdefault(row["param"], []).append(row)
    if not groups:
        return None
    metrics = {"FPS": lambda r: r["fps"], "Avg": lambda r: r["avg"]}
    metrics |= {c: (lambda r, c=c: r["scores"][c]) for c in table["avg_over"]}
    if any(r["world"] for r in table["rows"]):
        metrics |= {c: (lambda r, c=c: (r["world"] or {}).get(c)) for c in WORLD_COLUMNS}
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (metric, get) in zip(axes, metrics.items(), strict=False):
        for param, members in groups.items():
            values = [r["value"] for r in members]
            xs = _numeric(values) or list(range(len(values)))
            ys = [get(r) for r in members]
            ax.plot(xs, [math.nan if y is None else y for y in ys], marker="o", linewidth=1, label=param)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("parameter value (frames for sink / hist / tail)", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    base = table["rows"][0]["label"]
    fig.suptitle(f"metric vs memory size, one parameter varied at a time (others as in {base})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def write_comparison(settings: Sequence[Setting], jobs: Sequence[Job], meta: dict,
                     out: Path) -> tuple[str, Path | None]:
    """Writes ``comparison.json``, ``comparison.md``, ``sink_distance.png`` and (with grid rows) ``memory_size.png``
    under ``out``.

    Returns the Markdown and the plot's path (None without grid rows).
    """
    records = [json.loads(j.gen_record.read_text()) for j in jobs if j.gen_record.is_file()]
    devices = sorted({f"{r['device']} ({r.get('torch_threads')} torch threads)" for r in records})
    loads = [r["load_average_1m"] for r in records if "load_average_1m" in r]
    meta = {**meta, "devices": ", ".join(devices) or "unknown",
            "load_average": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "unknown",
            "protocol": "VBench-Long 2-s clips; quality columns x 100, flat mean over all clips of the row's videos"}
    table = comparison(settings, jobs, meta)
    _write_atomic(out / "comparison.json", json.dumps(table, indent=1, allow_nan=False) + "\n")
    markdown = comparison_markdown(table)
    _write_atomic(out / "comparison.md", markdown)
    plot_sink_distance(table, out / "sink_distance.png")
    return markdown, plot_memory_size(table, out / "memory_size.png")


# ---- commands -----------------------------------------------------------------------------------------------


def sweep_command(
    prompts_file: Annotated[Path, typer.Option(
        "--prompts", help="Prompt file, one prompt per line (MovieGen style; blank lines skipped).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for videos/, eval/ and the comparison.")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds, e.g. 0,1.")] = "42",
    memory: Annotated[list[str] | None, typer.Option(
        help="Memory specs, comma-separated or repeated: relax,dense,sink or relax:sink=4,lambda=1.5 "
             "[default: relax,dense,sink].")] = None,
    grid: Annotated[list[str] | None, typer.Option(
        help="param=v1,v2,... (repeatable): vary one parameter of the first --memory policy, the others "
             "held, e.g. sink=1,2,4,8.")] = None,
    seconds: Annotated[float, typer.Option(help="Video length in seconds.")] = 30.0,
    weights: Annotated[list[str] | None, typer.Option(
        "--weights", help="key=PATH of local official evaluation weights (repeatable); see `eval`.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="DiT checkpoint (default: the embedded toy model).")] = None,
    wan_dir: Annotated[Path | None, typer.Option(help="Wan2.1-T2V-1.3B folder (VAE, umT5, tokenizer).")] = None,
    lora: Annotated[Path | None, typer.Option(help="LongLive LoRA to merge into the checkpoint.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    compile: CompileOption = None,
    offload: OffloadOption = "auto",
    vae_tiles: VaeTilesOption = "auto",
    model: Annotated[str, typer.Option(help="toy (the embedded model, or --checkpoint's) or a full-size preset with "
                                            "random weights, e.g. wan2.1-t2v-1.3b: a GPU smoke test of every policy's "
                                            "speed and memory (the videos are noise).")] = "toy",
) -> None:
    """Generate prompts x seeds under several memory policies or sizes, evaluate, and compare (Table 1, Fig. 2).

    Existing videos are reused and an unfinished one continues from its saved state, so a killed sweep resumes;
    Ctrl-C or SIGTERM stops after the current chunk, saving that state. Under torchrun each rank takes its share of the
    videos and, once all ranks are done, rank 0 writes comparison.md, comparison.json and memory_size.png.
    """
    prompts = read_prompts(None, prompts_file)
    seed_list = parse_seeds(seeds)
    specs = parse_memory(memory or ["relax,dense,sink"])
    grid_points = parse_grid(grid)
    weight_paths = parse_weights(weights)
    if not seconds > 0:
        raise ValueError(f"--seconds must be positive, got {seconds}")
    parse_vae_tiles(vae_tiles, "cpu")
    if out.is_file():
        raise ValueError(f"--out is an existing file: {out}")
    if weight_paths:
        check_weights(weight_paths)
    if model != "toy":
        WanConfig.from_name(model)  # a known preset, or a one-line error
        if checkpoint is not None or wan_dir is not None or lora is not None:
            raise ValueError(f"--model {model} runs random weights; --checkpoint, --wan-dir and --lora go with "
                             "--model toy")
    identity = str(checkpoint) if checkpoint is not None else None if model == "toy" else f"{model} (random weights)"
    settings = build_settings(specs, grid_points)
    jobs = build_jobs(settings, prompts, seed_list, out)
    rank, size = world()
    tag = f"[rank {rank}/{size}] " if size > 1 else ""

    def load(prompts: list[str]) -> VideoPipeline:
        pipe = (load_pipeline(checkpoint=checkpoint, wan_dir=wan_dir, lora=lora, device=device, compile=compile,
                              offload=offload) if model == "toy"
                else random_pipeline(model, device=device, compile=compile, offload=offload))
        pipe = with_vae_tiles(pipe, vae_tiles)
        pipe.latent_frames(seconds)
        pipe.prepare(prompts)  # real model: this rank's prompts with one text-encoder load
        return pipe

    with process_group():  # leaves through a barrier: after it, every rank has finished its share
        _run_jobs(shard(jobs), out, seconds, identity, weight_paths, load, tag)
    if rank != 0:
        print(f"{tag}done; rank 0 writes {out / 'comparison.md'}")
        return
    done = sum(_evaluated(job, weight_paths) for job in jobs)
    if done < len(jobs):
        print(f"{tag}{done} of {len(jobs)} videos are evaluated, so no comparison was written; rerun this command "
              "to finish the rest")
        return
    meta = {"prompts": prompts, "seeds": seed_list, "seconds": seconds, "memory": specs, "grid": dict(grid_points),
            "model": identity or "toy (embedded)"}
    markdown, plot = write_comparison(settings, jobs, meta, out)
    print(f"{tag}wrote {out / 'comparison.md'}, {out / 'comparison.json'}"
          + (f", {plot}" if plot else " (no --grid, so no memory_size.png)"))
    print("\n".join(line for line in markdown.splitlines() if line.startswith("|")))


def register(app: typer.Typer) -> None:
    """Adds the ``sweep`` command to ``app``."""
    app.command("sweep")(sweep_command)

