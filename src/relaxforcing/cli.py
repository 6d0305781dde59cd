"""Command line: `relaxforcing generate | train-toy | eval | sweep | bench | serve`."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Long autoregressive video generation with structured KV memory (Relax Forcing and peers).")

MAX_PROMPT_CHARS = 2000


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "video"


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompt argument or the non-empty lines of a prompt file (MovieGen style: one prompt per line)."""
    if (prompt is None) == (prompts_file is None):
        raise ValueError("give exactly one of PROMPT or --prompts FILE")
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise ValueError(f"prompt file {prompts_file} does not exist")
        prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"prompt file {prompts_file} holds no prompts")
    else:
        prompts = [prompt]
    for p in prompts:
        if not p.strip():
            raise ValueError("the prompt is empty")
        if len(p) > MAX_PROMPT_CHARS:
            raise ValueError(f"a prompt is {len(p)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return prompts


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="Text prompt (or use --prompts FILE).")] = None,
    prompts_file: Annotated[Path | None, typer.Option("--prompts", help="File with one prompt per line.")] = None,
    seconds: Annotated[float, typer.Option(help="Video length in seconds.")] = 10.0,
    memory: Annotated[str, typer.Option(help="Memory policy, e.g. relax or relax:sink=2,lambda=2.0.")] = "relax",
    seed: Annotated[list[int] | None, typer.Option(help="Seed (repeat for several videos per prompt).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output mp4 (one prompt, one seed).")] = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for outputs when there are several.")] = Path("videos"),
    checkpoint: Annotated[Path | None, typer.Option(help="DiT checkpoint (default: the embedded toy model).")] = None,
    wan_dir: Annotated[Path | None, typer.Option(help="Wan2.1-T2V-1.3B folder (VAE, umT5, tokenizer).")] = None,
    lora: Annotated[Path | None, typer.Option(help="LongLive LoRA to merge into the checkpoint.")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write the per-chunk memory trace (JSON lines).")] = None,
    batch_size: Annotated[int, typer.Option(help="Videos generated together.")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs instead of skipping them.")] = False,
) -> None:
    """Generate videos, streaming each finished chunk into its mp4."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from relaxforcing.bundles import load_pipeline
    from relaxforcing.distributed import process_group, shard

    prompts = read_prompts(prompt, prompts_file)
    seeds = seed or [42]
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    jobs = [(p, s) for p in prompts for s in seeds]
    if output is not None:
        if len(jobs) != 1:
            raise ValueError(f"--output names one file but there are {len(jobs)} videos; use --out-dir")
        if output.suffix.lower() != ".mp4":
            raise ValueError(f"--output must end in .mp4, got {output}")
        if output.exists() and not overwrite:
            raise ValueError(f"{output} already exists; pass --overwrite to replace it")
        paths = [output]
    else:
        paths = [out_dir / f"{i:04d}_{slug(p)}_s{s}.mp4" for i, (p, s) in enumerate(jobs)]
        out_dir.mkdir(parents=True, exist_ok=True)
    with process_group():
        rank_jobs = shard(list(zip(jobs, paths, strict=True)))
        todo = [(job, path) for job, path in rank_jobs if overwrite or not path.exists()]
        for _, path in rank_jobs:
            if path.exists() and not overwrite:
                print(f"skip {path} (exists; --overwrite to replace)", file=sys.stderr)
        if not todo:
            return
        pipe = load_pipeline(checkpoint=checkpoint, wan_dir=wan_dir, lora=lora, device=device)
        pipe.latent_frames(seconds)  # validate before any work
        prepare = getattr(pipe, "prepare", None)
        if prepare is not None:  # encode this rank's prompts with one text-encoder load, before the DiT runs
            prepare([p for (p, _), _ in todo])
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("chunk {task.completed}/{task.total}"),
                   TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn()]
        with Progress(*columns, transient=False) as progress:
            for first in range(0, len(todo), batch_size):
                group = todo[first:first + batch_size]
                task = progress.add_task(f"{group[0][1].name}", total=None, fps=0.0)

                def report(done: int, total: int, fps: float, task=task) -> None:
                    progress.update(task, completed=done, total=total, fps=fps)

                trace_path = trace if trace is None or len(todo) == 1 else trace.with_suffix(f".{first}.jsonl")
                stats = pipe.generate([p for (p, _), _ in group], [s for (_, s), _ in group], seconds,
                                      [path for _, path in group], memory=memory, trace_path=trace_path,
                                      progress=report)
                for _, path in group:
                    progress.console.print(f"wrote {path} ({stats['video_frames']} frames, {stats['fps']:.1f} fps)")


@app.command("train-toy")
def train_toy(
    run_dir: Annotated[Path, typer.Option(help="Checkpoints and loss log (resumed if present).")] = Path("runs/toy"),
    steps: Annotated[int, typer.Option(help="Total optimisation steps.")] = 20000,
    batch: Annotated[int, typer.Option(help="Clips per step.")] = 32,
    time_budget: Annotated[float, typer.Option(help="Stop (and checkpoint) after this many seconds.")] = 540.0,
    device: Annotated[str, typer.Option(help="Training device.")] = "cuda",
    export_to: Annotated[Path | None, typer.Option("--export", help="Write fp16 EMA weights + sidecar here.")] = None,
) -> None:
    """Train the embedded toy model on the procedural world (resumable, time-boxed)."""
    from relaxforcing.toyworld.train import TrainConfig, export, train

    if steps < 1 or batch < 1 or time_budget <= 0:
        raise ValueError("--steps, --batch and --time-budget must be positive")
    config = TrainConfig(steps=steps, batch=batch)
    result = train(run_dir, config, time_budget, device=device)
    print(f"step {result['step']} of {steps}" + (" (done)" if result["done"] else " (run again to resume)"))
    if export_to is not None:
        print(f"exported {export(run_dir, export_to, config)}")


@app.command()
def bench(
    policies: Annotated[str, typer.Option(help="Comma-separated memory policies.")] = (
        "dense,sink,longlive,infinity,relax"),
    seconds: Annotated[float, typer.Option(help="Video length per policy.")] = 60.0,
    long_seconds: Annotated[float | None, typer.Option(help="Second length for memory flatness (e.g. 300).")] = None,
    model: Annotated[str, typer.Option(help="toy (embedded) or a full-size preset with random weights, e.g. "
                                             "wan2.1-t2v-1.3b (GPU).")] = "toy",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write all numbers as JSON here.")] = None,
    device: Annotated[str | None, typer.Option(help="Device (default: cuda if available).")] = None,
) -> None:
    """Time self-attention, DiT, decode and end-to-end generation per memory policy, side by side."""
    from relaxforcing.bench.run import markdown, run_bench
    from relaxforcing.bundles import load_pipeline, random_pipeline

    names = [p.strip() for p in policies.split(",") if p.strip()]
    pipe = load_pipeline(device=device) if model == "toy" else random_pipeline(model, device=device)
    report = run_bench(pipe, names, seconds, long_seconds, json_out)
    print(f"{report['model']} on {report['device']} ({report['dtype']}, torch {report['torch']})")
    print(markdown(report))


def _register_extensions() -> None:
    """Commands whose modules own their options: the viewer (``serve``), ``eval`` and ``sweep``."""
    from relaxforcing.evaluation.cli import register as register_eval
    from relaxforcing.server.cli import register as register_serve

    register_serve(app)
    register_eval(app)


_register_extensions()


def main() -> None:
    """Entry point: library errors become one line on stderr and exit status 2."""
    try:
        app()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError, FloatingPointError, RuntimeError, ImportError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        if os.environ.get("RELAXFORCING_DEBUG"):
            raise
        sys.exit(2)
