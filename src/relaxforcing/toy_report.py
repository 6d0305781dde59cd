"""World-truth comparison of memory policies on the embedded toy model: metrics at several lengths, table, plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relaxforcing.evaluation.sink_collapse import SINK_VIDEO_FRAMES, lowest_late_distance, sink_distances
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.toyworld.captions import caption
from relaxforcing.toyworld.metrics import analyze
from relaxforcing.toyworld.world import sample_world

REPORTED = ("persistence", "first_vanish_s", "shape_accuracy", "color_error_de00", "color_drift_de00",
            "motion_retention", "freeze_rate", "physics_error_px", "background_error_de76", "sink_distance_low")
"""Table columns: ``toyworld.metrics.world_metrics`` keys, and ``sink_distance_low``: the sink-collapse distance's
lowest value after the first 10% of frames (``evaluation.sink_collapse``: how close the video comes back to its
first 5 frames)."""
HELD_OUT_SEED = 1_000_000
"""World seeds from here on are never drawn in training (which samples seeds from [0, 2**62) at random, so the
chance of a collision is negligible)."""


def held_out_prompts(count: int) -> list[str]:
    """Captions of held-out worlds, deterministic."""
    return [caption(sample_world(HELD_OUT_SEED + i).scene) for i in range(count)]


def measure(
    pipe: VideoPipeline,
    prompts: Sequence[str],
    policies: Sequence[str],
    seconds: Sequence[float],
    out_jsonl: Path,
) -> list[dict]:
    """Generate each prompt (seed = its index) under each policy up to max(seconds); world metrics at each length.

    Appends one JSON line per (policy, prompt) to ``out_jsonl`` and skips pairs already there (resumable).
    """
    done = set()
    if out_jsonl.exists():
        done = {(r["policy"], r["prompt"]) for r in map(json.loads, out_jsonl.read_text().splitlines())}
    num_frames = pipe.latent_frames(max(seconds))
    for seed, prompt in enumerate(prompts):  # prompts outermost: a partial run covers every policy
        for policy in policies:
            if (policy, prompt) in done:
                continue
            output = VideoOutput(pipe.codec.chunk_decoder())
            frames = np.concatenate([output(c) for c in pipe.session([prompt], [seed], num_frames, policy)],
                                    axis=1)[0]
            analysis = analyze(frames, prompt, fps=pipe.fps)
            distances = sink_distances(frames, frames[:SINK_VIDEO_FRAMES])
            row = {"policy": policy, "prompt": prompt, "seed": seed,
                   "metrics": {str(s): {**analysis.summary(s), "sink_distance_low": lowest_late_distance(
                       distances[:round(s * pipe.fps)])} for s in seconds}}
            with open(out_jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    return [json.loads(line) for line in out_jsonl.read_text().splitlines()]


def table(rows: list[dict], seconds: Sequence[float]) -> str:
    """Markdown: one row per (policy, length), mean over prompts of each reported metric."""
    lines = ["| policy | length | n | " + " | ".join(REPORTED) + " |", "|---|---|---|" + "---|" * len(REPORTED)]
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        for s in seconds:
            values = [np.array([r["metrics"][str(s)].get(k, np.nan) for r in mine], dtype=float) for k in REPORTED]
            cells = [_mean_cell(v) for v in values]
            lines.append(f"| {policy} | {s:g} s | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against(rows: list[dict], seconds: Sequence[float], reference: str = "relax",
            metrics: Sequence[str] = REPORTED) -> str:
    """Markdown: each policy minus ``reference`` per length, paired by prompt (same prompt, same seed), as
    ``mean ± 2 SE`` over the prompts both finished; **bold** where the difference exceeds twice its standard error,
    i.e. is larger than the prompt-to-prompt (seed-to-seed) spread. Frames with no finite value are left out."""
    by_prompt = {(r["policy"], r["prompt"]): r for r in rows}
    keys = [k for k in metrics if k != "first_vanish_s"]
    lines = [f"| policy - {reference} | length | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for policy in dict.fromkeys(r["policy"] for r in rows):
        if policy == reference:
            continue
        pairs = [(by_prompt[(policy, p)], by_prompt[(reference, p)]) for (q, p) in by_prompt
                 if q == policy and (reference, p) in by_prompt]
        for s in seconds:
            cells = []
            for key in keys:
                diff = np.array([a["metrics"][str(s)].get(key, np.nan) - b["metrics"][str(s)].get(key, np.nan)
                                 for a, b in pairs], dtype=float)
                diff = diff[np.isfinite(diff)]
                if diff.size < 2:
                    cells.append("n/a")
                    continue
                mean, two_se = diff.mean(), 2 * diff.std(ddof=1) / np.sqrt(diff.size)
                cell = f"{mean:+.3f} ± {two_se:.3f}"
                cells.append(f"**{cell}**" if abs(mean) > two_se else cell)
            lines.append(f"| {policy} | {s:g} s | {len(pairs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_cell(values: np.ndarray) -> str:
    finite = values[np.isfinite(values)]
    if values.size and np.isinf(values).all():
        return "never"
    return f"{finite.mean():.3f}" if finite.size else "n/a"


def plot(rows: list[dict], seconds: Sequence[float], path: Path) -> None:
    """One panel per metric: mean over prompts vs video length, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in REPORTED if k != "first_vanish_s"]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(4 * ((len(keys) + 1) // 2), 7))
    for ax, key in zip(axes.flat, keys, strict=False):
        for policy in dict.fromkeys(r["policy"] for r in rows):
            mine = [r for r in rows if r["policy"] == policy]
            means = [np.nanmean([r["metrics"][str(s)].get(key, np.nan) for r in mine]) for s in seconds]
            ax.plot(seconds, means, marker="o", label=policy)
        ax.set_title(key)
        ax.set_xlabel("video length (s)")
    spare = axes.flat[len(keys):]  # an odd number of metrics leaves a panel: the legend goes there
    for ax in spare:
        ax.axis("off")
    (spare[0] if len(spare) else axes.flat[0]).legend(*axes.flat[0].get_legend_handles_labels(), loc="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
