"""Command line: `relaxforcing generate | train-toy | eval | sweep | bench | serve`."""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaxforcing.options import CompileOption, DecoderOption, DecoderWeightsOption, OffloadOption, VaeTilesOption
from relaxforcing.prompts import read_prompts, slug

if TYPE_CHECKING:
    from relaxforcing.pipeline import StartFrames, VideoPipeline
    from relaxforcing.snapshot import Snapshot

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Long autoregressive video generation with structured KV memory (Relax Forcing and peers).")

@dataclass
class GenerateRun:
    """The settings of one ``generate`` run, saved with its state so that ``--resume`` repeats them."""

    prompts: list[str]
    seeds: list[int]
    seconds: float
    memory: str
    output: Path | None
    out_dir: Path
    checkpoint: Path | None
    wan_dir: Path | None
    lora: Path | None
    trace: Path | None
    batch_size: int
    overwrite: bool
    crf: int
    size: str | None
    state: Path | None
    snapshot_every: int
    compile: bool | None = None
    """Compile the DiT's chunk step and the Wan VAE's decode (None: on CUDA only)."""
    attention: str = "auto"
    """Attention kernel (``model.attention.BACKENDS``)."""
    decoder: str = "wan"
    decoder_weights: Path | None = None
    offload: str = "auto"
    vae_tiles: str = "auto"
    image: Path | None = None
    """Picture the videos start from (their first frame)."""
    extend: Path | None = None
    """Video the videos continue."""
    context_seconds: float | None = None
    sinks_from_start: bool = False
    only_new: bool = False
    completed: list[str] = field(default_factory=list)
    """Outputs finished by this run (kept, not regenerated, when it is resumed with --overwrite)."""

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> GenerateRun:
        paths = {f.name for f in fields(cls) if "Path" in str(f.type)}
        try:
            return cls(**{k: Path(v) if k in paths and v is not None else v for k, v in data.items()})
        except TypeError as error:
            raise ValueError(f"the saved run settings are unreadable ({error})") from None

    def jobs(self) -> list[tuple[str, int, Path]]:
        """(prompt, seed, output) of every video, in order."""
        pairs = [(p, s) for p in self.prompts for s in self.seeds]
        if self.output is not None:
            return [(*pairs[0], self.output)]
        return [(p, s, self.out_dir / f"{i:04d}_{slug(p)}_s{s}.mp4") for i, (p, s) in enumerate(pairs)]

    def state_base(self) -> Path:
        """The folder ``--resume`` takes: ``--state``, else beside the output(s)."""
        return self.state or (self.output.with_suffix(".state") if self.output else self.out_dir / "generate.state")

    def state_dir(self) -> Path:
        """This process's snapshot folder: the base, or ``BASE/rankN`` under torchrun."""
        return rank_folder(self.state_base())

    def trace_path(self, output: Path) -> Path | None:
        if self.trace is None or self.output is not None or len(self.prompts) * len(self.seeds) == 1:
            return self.trace
        return self.trace.with_name(f"{self.trace.stem}.{output.stem}.jsonl")


def rank_folder(base: Path) -> Path:
    from relaxforcing.distributed import world

    rank, size = world()
    return base / f"rank{rank}" if size > 1 else base


def load_resume(base: Path) -> tuple[GenerateRun, Snapshot | None]:
    """The saved settings in ``base``, and this process's snapshot (None when this rank had nothing left)."""
    from relaxforcing.snapshot import STATE_FILE, load_snapshot

    mine = rank_folder(base)
    if (mine / STATE_FILE).is_file() or mine == base:
        snapshot = load_snapshot(mine)
        return GenerateRun.from_json(snapshot.meta.get("run", {})), snapshot
    others = sorted(base.glob(f"rank*/{STATE_FILE}"))
    if not others:
        raise ValueError(f"no saved generation in {base}")
    return GenerateRun.from_json(load_snapshot(others[0].parent).meta.get("run", {})), None


RESUME_KEEPS = {"resume", "device"}
"""Options that may be given with --resume; every other setting comes from the saved state."""


@app.command()
def generate(
    ctx: typer.Context,
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
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT for a Wan checkpoint: 832x480 (default) or "
                                                   "480x832. The toy model makes 64x64 only.")] = None,
    trace: Annotated[Path | None, typer.Option(help="Write the per-chunk memory trace (JSON lines).")] = None,
    batch_size: Annotated[int, typer.Option(help="Videos generated together.")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    crf: Annotated[int, typer.Option(help="H.264 quality, 0 (lossless) .. 51.")] = 18,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs instead of skipping them.")] = False,
    state: Annotated[Path | None, typer.Option(help="Save the stream state here every --snapshot-every chunks "
                                                    "(default: only on Ctrl-C/SIGTERM, beside the output).")] = None,
    snapshot_every: Annotated[int, typer.Option(help="Chunks between snapshots with --state.")] = 10,
    resume: Annotated[Path | None, typer.Option(help="Continue the run whose state is in this folder, with its "
                                                     "saved settings (only --device may be added).")] = None,
    compile: CompileOption = None,
    decoder: DecoderOption = "wan",
    decoder_weights: DecoderWeightsOption = None,
    offload: OffloadOption = "auto",
    vae_tiles: VaeTilesOption = "auto",
    image: Annotated[Path | None, typer.Option(help="Start from this picture: it is the video's first frame (scaled "
                                                    "to cover the model's frame, centre-cropped).")] = None,
    extend: Annotated[Path | None, typer.Option(help="Continue this video: its last frames go into the memory and "
                                                     "the new frames follow; -o gets the clip plus --seconds more.")
                      ] = None,
    context_seconds: Annotated[float | None, typer.Option(help="With --extend: seconds of the clip's end committed "
                                                               "to the memory (default: what the policy attends).")
                               ] = None,
    sinks_from_start: Annotated[bool, typer.Option(help="With --extend: the clip's first frames are the sinks "
                                                        "(default: the first committed context frames are).")
                                ] = False,
    only_new: Annotated[bool, typer.Option(help="With --extend: write only the new frames, not the clip.")] = False,
    attention: Annotated[str, typer.Option(help="Attention kernel: auto, flash, cudnn, efficient or math (PyTorch "
                                                "SDPA kernels; cudnn and efficient need CUDA).")] = "auto",
) -> None:
    """Generate videos, streaming each finished chunk into its mp4; Ctrl-C stops cleanly and can be resumed."""
    from relaxforcing.codecs.base import parse_vae_tiles
    from relaxforcing.model.attention import check_backend
    from relaxforcing.snapshot import STATE_FILE
    from relaxforcing.video import check_crf

    if resume is not None:
        given = [name for name in ctx.params if name not in RESUME_KEEPS
                 and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"]
        if given:
            names = ", ".join("PROMPT" if n == "prompt" else "--" + n.replace("_", "-") for n in given)
            raise ValueError(f"--resume continues with the saved settings; drop {names}")
        run, snapshot = load_resume(resume)
        run_generate(run, device, snapshot)
        return
    if snapshot_every < 1:
        raise ValueError(f"--snapshot-every must be >= 1, got {snapshot_every}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    check_crf(crf)
    parse_vae_tiles(vae_tiles, "cpu")  # the value's form, before any loading
    check_start(image, extend, context_seconds, sinks_from_start, only_new, output)
    prompts = read_prompts(prompt, prompts_file)
    seeds = seed or [42]
    if not all(0 <= s < 2**63 for s in seeds):
        raise ValueError(f"--seed must be in 0..2**63-1, got {[s for s in seeds if not 0 <= s < 2**63][0]}")
    if output is not None:
        if len(prompts) * len(seeds) != 1:
            raise ValueError(f"--output names one file but there are {len(prompts) * len(seeds)} videos; "
                             "use --out-dir")
        if output.suffix.lower() != ".mp4":
            raise ValueError(f"--output must end in .mp4, got {output}")
    run = GenerateRun(prompts=prompts, seeds=seeds, seconds=seconds, memory=memory, output=output, out_dir=out_dir,
                      checkpoint=checkpoint, wan_dir=wan_dir, lora=lora, trace=trace, batch_size=batch_size,
                      overwrite=overwrite, crf=crf, size=size, state=state, snapshot_every=snapshot_every,
                      compile=compile, attention=check_backend(attention), decoder=decoder,
                      decoder_weights=decoder_weights, offload=offload, vae_tiles=vae_tiles,
                      image=image, extend=extend, context_seconds=context_seconds, sinks_from_start=sinks_from_start,
                      only_new=only_new)
    if output is not None and output.exists() and not overwrite:
        raise ValueError(f"{output} already exists; pass --overwrite to replace it")
    if (run.state_dir() / STATE_FILE).exists():
        raise ValueError(f"{run.state_dir()} holds the state of an interrupted run; continue it with "
                         f"`relaxforcing generate --resume {run.state_base()}`, or delete that folder")
    run_generate(run, device, None)


def check_start(image: Path | None, extend: Path | None, context_seconds: float | None, sinks_from_start: bool,
                only_new: bool, output: Path | None) -> None:
    """Fail before any work on contradictory --image/--extend options or an input that cannot be read."""
    from relaxforcing.media import open_clip, read_image

    if image is not None and extend is not None:
        raise ValueError("--image and --extend exclude each other: start from a picture or continue a video")
    if extend is None and (context_seconds is not None or sinks_from_start or only_new):
        raise ValueError("--context-seconds, --sinks-from-start and --only-new go with --extend VIDEO")
    if context_seconds is not None and not (context_seconds > 0 and math.isfinite(context_seconds)):
        raise ValueError(f"--context-seconds must be a positive number, got {context_seconds}")
    if image is not None:
        read_image(image)
    if extend is not None:
        open_clip(extend)
        if output is not None and output.resolve() == extend.resolve():
            raise ValueError(f"-o {output} is the video being extended; write the result to another file")


def start_frames(pipe: VideoPipeline, run: GenerateRun) -> StartFrames | None:
    """Encode ``run``'s --image or --extend input for ``pipe`` (None without one); notes go to stderr."""
    from relaxforcing.media import open_clip

    if run.image is not None:
        return pipe.start_from(image=run.image, memory=run.memory)
    if run.extend is None:
        return None
    clip = open_clip(run.extend)
    if abs(clip.fps - pipe.fps) > 0.01:
        print(f"note: {run.extend} is {clip.fps:g} fps; resampled to the model's {pipe.fps} fps", file=sys.stderr)
    if (clip.height, clip.width) not in (pipe.frame_hw, tuple(n * pipe.upscale for n in pipe.frame_hw)):
        h, w = pipe.frame_hw
        print(f"note: {run.extend} is {clip.width}x{clip.height}; scaled to cover {w}x{h} and centre-cropped",
              file=sys.stderr)
    context = None if run.context_seconds is None else pipe.latent_frames(run.context_seconds)  # whole chunks
    return pipe.start_from(video=run.extend, memory=run.memory, context_frames=context,
                           sinks_from_start=run.sinks_from_start)


def input_size(run: GenerateRun) -> str | None:
    """The Wan size matching the orientation of --image/--extend (portrait: 480x832), when --size is not given."""
    from relaxforcing.media import image_size

    source = run.image or run.extend
    if run.size is not None or run.checkpoint is None or source is None:
        return run.size
    h, w = image_size(source)
    return "480x832" if h > w else None


def check_folder_flag(flag: str, folder: Path) -> None:
    """Fail before any work when the folder a flag names is an existing file."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is a file, not a folder")


def check_writable(folder: Path) -> None:
    """Fail before any work when videos cannot be written into ``folder``."""
    if not folder.is_dir():
        raise ValueError(f"output folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"cannot write into {folder}: {error.strerror or error}") from None


def run_generate(run: GenerateRun, device: str | None, snapshot: Snapshot | None) -> None:
    """Generate ``run``'s videos this rank owns (skipping finished ones), continuing ``snapshot``'s batch first."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from relaxforcing.distributed import process_group, shard
    from relaxforcing.interrupts import Interrupted, stop_on_signals
    from relaxforcing.loaders import load_pipeline, with_decoder, with_vae_tiles
    from relaxforcing.resume import Snapshots
    from relaxforcing.runner import Stopped, generate_videos
    from relaxforcing.snapshot import clear_snapshot
    from relaxforcing.video import partial_path

    jobs = run.jobs()
    if run.output is None:
        check_folder_flag("--out-dir", run.out_dir)
        run.out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(jobs[0][2].parent)
    if run.trace is not None and not run.trace.parent.is_dir():
        raise ValueError(f"--trace: folder {run.trace.parent} does not exist")
    check_folder_flag("--state", run.state_base())
    resumed = [Path(p) for p in snapshot.meta["job"]["outputs"]] if snapshot is not None else []
    if resumed and all(p.exists() for p in resumed):  # killed after that batch finished, before its state went
        snapshot, resumed = None, []
    with process_group():
        mine = shard(jobs)
        done = set(run.completed)
        todo = [j for j in mine if str(j[2]) not in done and (run.overwrite or not j[2].exists())]
        for _, _, path in mine:
            if path.exists() and not run.overwrite:
                print(f"skip {path} (exists; --overwrite to replace)", file=sys.stderr)
        for _, _, path in todo:
            if path not in resumed and partial_path(path).exists() and not run.overwrite:
                raise ValueError(f"{partial_path(path)} is left from an interrupted run; continue it with --resume "
                                 f"STATE if it saved one ({run.state_base()} holds none), or pass --overwrite to "
                                 "start the video again")
        batches = [[j for j in todo if j[2] in resumed]] if resumed else []
        rest = [j for j in todo if j[2] not in resumed]
        batches += [rest[i:i + run.batch_size] for i in range(0, len(rest), run.batch_size)]
        if not batches:
            return
        pipe = load_pipeline(checkpoint=run.checkpoint, wan_dir=run.wan_dir, lora=run.lora, device=device,
                             size=input_size(run), compile=run.compile, offload=run.offload)
        pipe.model.use_attention(run.attention)
        pipe.latent_frames(run.seconds)  # validate before any work
        start = start_frames(pipe, run)  # with the full codec, before a preview decoder replaces it
        with_vae_tiles(with_decoder(pipe, run.decoder, run.decoder_weights), run.vae_tiles)
        prefix = None
        if start is not None and start.continues and not run.only_new:
            from relaxforcing.media import open_clip

            clip = open_clip(run.extend)
            prefix = lambda: clip.frames(pipe.frame_hw, pipe.fps)  # noqa: E731
        pipe.prepare([p for p, _, _ in todo])  # umT5: this rank's prompts with one encoder load, before the DiT
        for prompt in dict.fromkeys(p for p, _, _ in todo):
            note = pipe.encode_text.interpret(prompt)
            if note:
                print(note, file=sys.stderr)
        state_dir = run.state_dir()
        snapshots = Snapshots(state_dir, every=run.snapshot_every if run.state else 0)
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("chunk {task.completed}/{task.total}"),
                   TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn()]
        with Progress(*columns, transient=False) as progress, stop_on_signals() as stop:
            for batch in batches:
                task = progress.add_task(f"{batch[0][2].name}", total=None, fps=0.0)

                def report(done: int, total: int, fps: float, task=task) -> None:
                    progress.update(task, completed=done, total=total, fps=fps)

                outputs = [path for _, _, path in batch]
                snapshots.extra = {"run": run.to_json()}
                try:
                    stats = generate_videos(pipe, [p for p, _, _ in batch], [s for _, s, _ in batch], run.seconds,
                                            outputs, memory=run.memory, trace_path=run.trace_path(outputs[0]),
                                            progress=report, crf=run.crf, snapshots=snapshots, stop_requested=stop,
                                            resume=snapshot if outputs == resumed else None, start=start,
                                            prefix=prefix)
                except Stopped as stopped:
                    progress.stop()
                    partial = ", ".join(str(p) for p in stopped.partial_videos)
                    raise Interrupted(f"{stopped}; playable partial video: {partial}; resume with: "
                                      f"relaxforcing generate --resume {run.state_base()}", stopped.signal) from None
                run.completed += [str(p) for p in outputs]
                clear_snapshot(state_dir)
                for path in outputs:
                    progress.console.print(f"wrote {path} ({stats.video_frames} frames, {stats.fps:.1f} fps)")
                if stop():  # asked to stop between two batches: nothing is half done
                    raise Interrupted(f"interrupted ({stop()}); finished videos are kept; run the same command "
                                      "again to make the rest", stop())


@app.command("train-toy")
def train_toy(
    run_dir: Annotated[Path, typer.Option(help="Checkpoints and loss log (resumed if present).")] = Path("runs/toy"),
    steps: Annotated[int, typer.Option(help="Total optimisation steps.")] = 20000,
    batch: Annotated[int, typer.Option(help="Clips per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, linear warm-up then cosine).")] = 3e-4,
    time_budget: Annotated[float, typer.Option(help="Stop (and checkpoint) after this many seconds.")] = 540.0,
    device: Annotated[str, typer.Option(help="Training device.")] = "cuda",
    export_to: Annotated[Path | None, typer.Option("--export", help="Write fp16 EMA weights + sidecar here.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start a new run from exported weights (e.g. the shipped "
                                                        "ones in relaxforcing/weights), keeping their codec.")] = None,
    image_start: Annotated[float, typer.Option(help="Share of clips that open on a still first latent frame, given "
                                                    "clean, as generate --image starts a video.")] = 0.1,
) -> None:
    """Train the embedded toy model on the procedural world (resumable, time-boxed)."""
    from relaxforcing.interrupts import Interrupted, stop_on_signals
    from relaxforcing.toyworld.train import TrainConfig, export, train

    if steps < 1 or batch < 1 or not time_budget > 0 or not lr > 0:
        raise ValueError("--steps, --batch, --lr and --time-budget must be positive")
    if not 0 <= image_start <= 1:
        raise ValueError(f"--image-start is a share of clips, from 0 to 1; got {image_start}")
    check_folder_flag("--run-dir", run_dir)
    if export_to is not None:
        check_folder_flag("--export", export_to)
    if init_from is not None and not (init_from / "toy.safetensors").is_file():
        raise ValueError(f"--init-from {init_from} holds no toy.safetensors (a folder written by --export)")
    config = TrainConfig(steps=steps, batch=batch, lr=lr, image_start=image_start)
    with stop_on_signals("training step") as stop:
        result = train(run_dir, config, time_budget, device=device, init_from=init_from, stop_requested=stop)
    if stop() and not result["done"]:
        raise Interrupted(f"interrupted ({stop()}) at step {result['step']} of {steps}; the checkpoint is saved in "
                          f"{run_dir}; run the same command again to resume", stop())
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
    profile: Annotated[bool, typer.Option(help="Also profile one steady chunk per policy (kernels, top ops).")
                       ] = False,
    overlap: Annotated[bool | None, typer.Option("--overlap/--no-overlap", help="Decode each chunk while the next "
                                                 "is made, as generate does on CUDA (default: on CUDA).")] = None,
    decoder: Annotated[str, typer.Option(help="wan, tae, or both comma-separated (wan,tae) to compare decoders in "
                                              "one run; tae takes random weights without --decoder-weights.")
                       ] = "wan",
    decoder_weights: DecoderWeightsOption = None,
    device: Annotated[str | None, typer.Option(help="Device (default: cuda if available).")] = None,
    compile: CompileOption = None,
    offload: Annotated[str, typer.Option(help="Where frame stores live, comma-separated to compare: auto, none, "
                                              "history, all (see generate --offload).")] = "auto",
    late_seconds: Annotated[float | None, typer.Option(help="Also time chunks this deep into a stream (e.g. 1200 "
                                                            "for 20 minutes), the store fast-forwarded there.")
                            ] = None,
    vae_tiles: Annotated[str, typer.Option(help="Wan VAE decode tiles, comma-separated to compare (e.g. off,auto): "
                                                "auto, off or HxW latent cells (see generate --vae-tiles).")
                         ] = "auto",
    cuda_graphs: Annotated[str, typer.Option(help="Replay the compiled denoising steps from CUDA graphs: on, off, "
                                                  "or on,off to compare in one run (compiled CUDA DiT only).")
                           ] = "on",
    vae_compile: Annotated[str | None, typer.Option(help="Compile the Wan VAE's streaming decode (whole frames): "
                                                         "off, on, or off,on to compare in one run (default: as "
                                                         "the DiT, see --compile).")] = None,
    attention: Annotated[str, typer.Option(help="Attention kernel, comma-separated to compare (e.g. auto,cudnn): "
                                                "auto, flash, cudnn, efficient or math.")] = "auto",
    key_tokens: Annotated[str | None, typer.Option(help="Also time the --attention kernels alone at these key "
                                                        "lengths, comma-separated (e.g. 512,2048,10920): ms per call "
                                                        "at one chunk's queries, error against float32.")] = None,
) -> None:
    """Time self-attention, DiT, decode and end-to-end generation per memory policy, side by side."""
    from relaxforcing.bench.run import markdown, run_bench
    from relaxforcing.codecs.base import parse_vae_tiles
    from relaxforcing.loaders import load_pipeline, random_pipeline, with_decoder, with_vae_tiles
    from relaxforcing.memory import build_policy
    from relaxforcing.model.attention import check_backend
    from relaxforcing.sampling.sampler import check_offload

    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise ValueError("--policies names no memory policy")
    for name in names:
        build_policy(name)
    offloads = [o.strip() for o in offload.split(",") if o.strip()] or ["auto"]
    for mode in offloads:
        check_offload(mode)
    tilings = list(dict.fromkeys(t.strip() for t in vae_tiles.split(",") if t.strip())) or ["auto"]
    for spec in tilings:
        parse_vae_tiles(spec, "cpu")
    graph_modes = [g.strip().lower() for g in cuda_graphs.split(",") if g.strip()] or ["on"]
    if not set(graph_modes) <= {"on", "off"}:
        raise ValueError(f"--cuda-graphs {cuda_graphs!r}: choose on, off or on,off")
    vae_compiles = list(dict.fromkeys(v.strip().lower() for v in (vae_compile or "").split(",") if v.strip()))
    if not set(vae_compiles) <= {"on", "off"}:
        raise ValueError(f"--vae-compile {vae_compile!r}: choose off, on or off,on")
    attentions = [check_backend(a) for a in dict.fromkeys(a.strip().lower() for a in attention.split(","))
                  if a] or ["auto"]
    try:
        key_lengths = [int(n) for n in (key_tokens or "").split(",") if n.strip()]
    except ValueError:
        raise ValueError(f"--key-tokens {key_tokens!r}: give whole numbers of keys, e.g. 512,2048") from None
    if any(n <= 0 for n in key_lengths):
        raise ValueError(f"--key-tokens {key_tokens!r}: key lengths must be positive")
    for flag, value in (("--seconds", seconds), ("--long-seconds", long_seconds), ("--late-seconds", late_seconds)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{flag} must be a positive number, got {value}")
    if json_out is not None:
        check_writable(json_out.parent)
        if json_out.is_dir():
            raise ValueError(f"--json {json_out} is a folder, not a file")
    pipe = (load_pipeline(device=device, compile=compile) if model == "toy"
            else random_pipeline(model, device=device, compile=compile))
    loaded, codecs = pipe.codec, {}
    for name in dict.fromkeys(d.strip() for d in decoder.split(",") if d.strip()):
        pipe.codec = loaded
        weights = decoder_weights if name == "tae" else None
        label = "toy" if model == "toy" else name  # the toy model's own codec
        with_decoder(pipe, name, weights, random_ok=model != "toy")  # speed: any weights
        chosen = pipe.codec
        for spec in tilings if name == "wan" else ["auto"]:  # tiles are the full VAE's
            pipe.codec = chosen
            codec = with_vae_tiles(pipe, spec).codec
            tiles = getattr(codec, "tiles", None)
            if tiles is not None:
                codecs.setdefault(f"{label}:{tiles.height}x{tiles.width}", codec)
                continue
            variants = [codec.with_compiled(c == "on") for c in vae_compiles] if hasattr(codec, "with_compiled") \
                else []
            for variant in variants or [codec]:  # without --vae-compile: as loaded (compiled with the DiT)
                codecs.setdefault(label + (" (compiled)" if getattr(variant, "compiled", False) else ""), variant)
    report = run_bench(pipe, names, seconds, long_seconds, json_out, profile, overlap, offloads, late_seconds,
                       codecs, [g == "on" for g in graph_modes], attentions, key_lengths)
    print(f"{report['model']} on {report['device']} ({report['dtype']}, torch {report['torch']})")
    print(markdown(report))


def _register_extensions() -> None:
    """Commands whose modules own their options: the viewer (``serve``), ``eval`` and ``sweep``."""
    from relaxforcing.evaluation.cli import register as register_eval
    from relaxforcing.server.cli import register as register_serve
    from relaxforcing.sweep import register as register_sweep

    register_serve(app)
    register_eval(app)
    register_sweep(app)


_register_extensions()


def one_line(error: BaseException) -> str:
    return re.sub(r"^\[Errno \d+\] ", "", " ".join(str(error).split())) or type(error).__name__


def main() -> None:
    """Entry point: usage and library errors become one line on stderr and a non-zero exit, never a traceback."""
    from relaxforcing.interrupts import Interrupted

    try:
        code = app(standalone_mode=False)
    except Interrupted as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError, FloatingPointError, RuntimeError, ImportError, OverflowError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        if os.environ.get("RELAXFORCING_DEBUG"):
            raise
        sys.exit(2)
    except Exception as error:
        if not hasattr(error, "format_message"):  # not one of click's usage errors (typer vendors click)
            raise
        if type(error).__name__ == "NoArgsIsHelpError":
            error.show()
            sys.exit(2)
        context = getattr(error, "ctx", None)
        hint = f" (see {context.command_path} --help)" if context is not None else ""
        print(f"error: {' '.join(error.format_message().split())}{hint}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)
