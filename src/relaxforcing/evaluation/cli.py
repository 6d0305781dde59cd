"""`relaxforcing eval`: score videos clip by clip (VBench-Long protocol) with weight-free backends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["eval_command", "key_value_pairs", "parse_backends", "parse_weights", "register"]


def key_value_pairs(items: Sequence[str] | None, option: str) -> list[tuple[str, str]]:
    """``["a=1", "b=x,y"]`` -> ``[("a", "1"), ("b", "x,y")]``; ValueError names a malformed item."""
    pairs = []
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{option} expects key=value, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def parse_backends(items: Sequence[str] | None) -> dict[str, list[str]] | None:
    """``["dynamic_degree=dis,raft", "motion_smoothness="]`` -> ``{"dynamic_degree": ["dis", "raft"], ...}``.

    Repeated dimensions accumulate; an empty name list turns the dimension off. None when nothing is given.
    """
    chosen: dict[str, list[str]] = {}
    for dimension, names in key_value_pairs(items, "--backend"):
        chosen.setdefault(dimension, []).extend(n.strip() for n in names.split(",") if n.strip())
    return chosen or None


def parse_weights(items: Sequence[str] | None) -> dict[str, Path] | None:
    """``["dino=/models/dino"]`` -> ``{"dino": Path("/models/dino")}``; keys and paths are checked by the backends."""
    weights: dict[str, Path] = {}
    for key, path in key_value_pairs(items, "--weights"):
        if key in weights:
            raise ValueError(f"--weights {key} is given twice")
        if not path:
            raise ValueError(f"--weights {key}= has no path")
        weights[key] = Path(path).expanduser()
    return weights or None


def eval_command(
    videos: Annotated[list[Path], typer.Argument(help="Videos to evaluate.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for eval.json, eval.md and plots/.")],
    backend: Annotated[list[str] | None, typer.Option(
        "--backend", help="dimension=name[,name] (repeatable): replaces that dimension's default backends; "
                          "an empty list turns it off, e.g. dynamic_degree=dis.")] = None,
    weights: Annotated[list[str] | None, typer.Option(
        "--weights", help="key=PATH of local official weights (repeatable): raft, amt, dino, clip_b32, clip_l14, "
                          "laion_head, musiq. Never downloaded.")] = None,
    trace: Annotated[Path | None, typer.Option(
        help="Generation trace (JSON lines, from `generate --trace`) to draw as memory_timeline.png.")] = None,
    seam_at: Annotated[float | None, typer.Option(
        help="Seconds where the videos continue a given clip (generate --extend): report the motion across that "
             "seam against the clip's own frame-to-frame motion.")] = None,
) -> None:
    """Score videos clip by clip (VBench-Long protocol) and write eval.json, eval.md and plots."""
    from relaxforcing.evaluation.suite import check_inputs, run_eval
    from relaxforcing.evaluation.timeline import plot_memory_timeline, read_trace

    backends, weight_paths = parse_backends(backend), parse_weights(weights)
    check_inputs(videos, out)
    if trace is not None:
        read_trace(trace)  # a bad trace fails before the slow part
    if seam_at is not None and not seam_at > 0:
        raise ValueError(f"--seam-at must be positive seconds, got {seam_at}")
    results = run_eval(list(videos), out, backends=backends, weights=weight_paths, seam_at=seam_at)
    outputs = results["outputs"]
    clips = sum(v["num_clips"] for v in results["videos"])
    print(f"wrote {outputs['markdown']}")
    print(f"  {len(results['videos'])} video(s), {clips} clip(s), {results['seconds']:.1f} s; "
          f"numbers in {outputs['json']}, plots in {Path(out) / 'plots'}")
    summary = results["summary"]
    width = max(len(m) for m in summary)
    for metric, entry in summary.items():
        if entry["status"] == "ok":
            official = " (official)" if results["catalogue"][metric]["official"] else ""
            print(f"  {metric:<{width}}  {entry['score']:.4f}{official}")
    missing = [m for m, e in summary.items() if e["status"] != "ok"]
    if missing:
        print(f"  missing (no local weights): {', '.join(missing)}")
    for video in results["videos"]:
        if "seam" in video:
            seam = video["seam"]
            verdict = "within" if seam["within_spread"] else "ABOVE"
            print(f"  seam at {seam['at_s']:g} s in {video['path']}: {seam['seam_px']:.2f} px, {verdict} the clip's "
                  f"own frame-to-frame motion (mean {seam['before_mean_px']:.2f}, max {seam['before_max_px']:.2f} px)")
    if trace is not None:
        print(f"  memory timeline: {plot_memory_timeline(trace, Path(out) / 'memory_timeline.png')}")


def register(app: typer.Typer) -> None:
    """Adds the ``eval`` command to ``app``."""
    app.command("eval")(eval_command)
