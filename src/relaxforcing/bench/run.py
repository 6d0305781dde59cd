"""Side-by-side benchmark of memory policies on one device (timings live here, never in tests or model code)."""

from __future__ import annotations

import gc
import json
import math
import platform
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from relaxforcing.bench.kernels import attention_ms, kernel_sweep, sweep_markdown
from relaxforcing.bench.timer import Timer
from relaxforcing.codecs.base import Codec
from relaxforcing.memory import build_policy
from relaxforcing.model.attention import auto_kernel
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.sampling import Chunk
from relaxforcing.sampling.sampler import resolve_offload
from relaxforcing.video import VideoWriter


@dataclass
class BenchResult:
    policy: str
    decoder: str
    offload: str
    """Where the frame store lived (``FrameStore`` modes)."""
    dit: str
    """How the DiT ran: ``eager``, ``compiled`` or ``compiled + graphs`` (denoising steps replayed from CUDA graphs)."""
    seconds: float
    attended_frames: int
    """Cached frames + the current chunk attended per chunk at steady state."""
    attended_tokens: float
    """Keys each query attends, in frames' worth of tokens (mean over the steady chunks): less than
    ``attended_frames`` when a policy keeps only some tokens of its frames (deep)."""
    self_attention_ms_per_chunk: float
    """The attention kernel over the steady-state shapes, all layers, all forwards of one chunk (projections
    excluded)."""
    dit_ms_per_chunk: float
    decode_ms_per_chunk: float
    e2e_fps: float
    """Video frames per second, wall clock over the steady-state chunks: DiT + decode + mp4 writing (on the
    writer's own thread), as ``generate`` runs them."""
    dit_fps: float
    first_frame_s: float
    """Time to the first chunk's decoded frames, after the warm-up run (compile caches and kernels warm)."""
    warmup_s: float
    """A separate run up to two steady-state chunks before the timed one: compilation, kernel selection."""
    steady_chunks: int
    """Chunks averaged over: those whose memory has reached its steady-state length (warm-up chunks excluded)."""
    compiled_error: float | None
    """With a compiled DiT: relative L2 difference of chunk 10's latents, compiled vs eager (same seed)."""
    peak_memory_gb: float
    """Peak device memory over the timed run (CUDA) or the frame store's size (CPU), GB."""
    store_device_gb: float
    """The frame store's keys/values on the device (offloaded: sinks, recent frames, staging)."""
    store_host_gb: float
    """The frame store's keys/values in host memory (page-locked)."""
    workspace_gb: float
    """The reader's rotated keys/values of the attended frames (one chunk's memory, reused chunk to chunk)."""
    decode_transient_gb: float
    """Device memory one chunk's decode takes beyond what is allocated before it (CUDA; 0 on CPU)."""
    decoder_state_gb: float
    """The streaming decoder's state after two chunks (the Wan VAE's causal caches, all tiles)."""
    late: dict | None = None
    """At a late position (:func:`late_chunks`): its length in seconds, DiT ms/chunk and peak GB there (decoding
    included)."""


def bench_policy(
    pipe: VideoPipeline, policy: str, seconds: float, prompt: str = "a red circle bouncing on a black background",
    overlap: bool | None = None, offload: str | None = None, late_seconds: float | None = None,
    check_compiled: bool = True, decoder: str = "default",
) -> BenchResult:
    """Generate ``seconds`` of video under ``policy`` (batch 1) and time each stage at steady state; ``overlap``
    decodes each chunk while the next is made, as ``generate`` does on CUDA (default: on CUDA); ``offload`` as in
    ``VideoPipeline.session``; ``late_seconds`` adds :func:`late_chunks` at that depth; ``check_compiled`` compares
    compiled and eager output (:func:`compiled_error`)."""
    device = pipe.model.patch_embedding.weight.device
    timer = Timer(device)
    num_frames = pipe.latent_frames(seconds)
    chunk = pipe.model.config.chunk_frames
    attended = build_policy(policy, chunk).steady_frames() + chunk
    forwards = len(pipe.schedule.steps) + 1
    warmup_s, _ = timer(lambda: warm_up(pipe, policy, prompt, attended, offload))
    fresh_peak(device)
    session = pipe.session([prompt], [0], num_frames, policy, offload=offload)
    spans = []  # (began, ended) marks of each steady chunk's DiT work
    chunks = frames_before = 0
    tokens = math.prod(pipe.model.token_grid(pipe.latent_hw))
    key_tokens = []  # per steady chunk
    first_frame = steady_began = None
    began = time.perf_counter()
    overlap = device.type == "cuda" if overlap is None else overlap
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "bench.mp4", pipe.fps, pipe.upscale) as out:
        with VideoOutput(pipe.codec.chunk_decoder(), [out], overlap=overlap) as output:
            while not session.done:
                span_began = timer.mark()
                result = session.next_chunk()
                span = (span_began, timer.mark())
                output.submit(result)
                if first_frame is None:
                    output.wait()
                    first_frame = output.first_frame_at - began
                if attended_by(result) != attended:  # warm-up: the memory is still growing
                    output.wait()
                    out.flush()
                    steady_began, frames_before = time.perf_counter(), output.frames_out
                    continue
                spans.append(span)
                chunks, last_latents = chunks + 1, result.latents
                key_tokens.append(sum(a.get("tokens", tokens) for a in result.trace[0]["attended"]))
            output.wait()
            out.flush()
            wall_s = time.perf_counter() - (steady_began or began)
        decode_s = sum(output.decode_seconds[-chunks:]) if chunks else 0.0
        dit_s = sum(timer.between(*span) for span in spans)
        frames_out = output.frames_out - frames_before
    if not chunks:
        raise ValueError(f"{policy} never reaches its steady state in {seconds:g} s; benchmark a longer video")
    store = session.store
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else store.nbytes()
    sizes = {"offload": store.offload, "store_device_gb": store.device_nbytes() / 1e9,
             "store_host_gb": store.host_nbytes() / 1e9, "workspace_gb": store.workspace_nbytes() / 1e9}
    timings = {"dit_ms_per_chunk": 1e3 * dit_s / chunks, "decode_ms_per_chunk": 1e3 * decode_s / chunks,
               "e2e_fps": frames_out / wall_s, "dit_fps": frames_out / dit_s}
    del session, store, output  # the runs below measure their own sessions and decoders
    return BenchResult(
        policy=policy, decoder=decoder, dit=dit_mode(pipe), seconds=seconds, attended_frames=attended,
        attended_tokens=sum(key_tokens) / len(key_tokens) / tokens, **sizes, **timings,
        self_attention_ms_per_chunk=attention_ms(pipe, key_tokens, forwards),
        first_frame_s=first_frame, warmup_s=warmup_s, steady_chunks=chunks, peak_memory_gb=peak / 1e9,
        **decode_memory(pipe, last_latents),
        compiled_error=compiled_error(pipe, policy, prompt, offload) if check_compiled else None,
        late=late_chunks(pipe, policy, late_seconds, prompt, offload, overlap=overlap) if late_seconds else None,
    )


def dit_mode(pipe: VideoPipeline) -> str:
    """``eager``, ``compiled`` or ``compiled + graphs`` (graphs that failed to capture do not count), with the
    attention backend when it is not ``auto``."""
    model, graphs = pipe.model, pipe.model.cuda_graphs
    mode = "compiled + graphs" if graphs is not None and graphs.failed is None else (
        "compiled" if model.compiled else "eager")
    return mode if model.attention_backend == "auto" else f"{mode}, {model.attention_backend} attention"


def fresh_peak(device: torch.device) -> None:
    """Drop what earlier runs left (unreachable sessions, cached blocks) and restart the peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def decode_memory(pipe: VideoPipeline, latents: torch.Tensor) -> dict[str, float]:
    """``decode_transient_gb``: device memory a steady chunk's decode takes beyond what is allocated before it (0 off
    CUDA); ``decoder_state_gb``: the stream's state after it (a fresh stream, two chunks of ``latents``)."""
    device = pipe.model.patch_embedding.weight.device
    cuda = device.type == "cuda"
    decoder = pipe.codec.chunk_decoder()
    decoder.decode(latents)  # the stream's first chunk decodes differently
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    decoder.decode(latents)
    transient = 0
    if cuda:
        torch.cuda.synchronize(device)
        transient = torch.cuda.max_memory_allocated(device) - before
    state = sum(t.nbytes for t in decoder.state_dict().values())
    return {"decode_transient_gb": transient / 1e9, "decoder_state_gb": state / 1e9}


def late_chunks(pipe: VideoPipeline, policy: str, seconds: float, prompt: str, offload: str | None,
                chunks: int = 4, overlap: bool = False) -> dict:
    """DiT time and peak device memory of ``chunks`` chunks made ``seconds`` into a stream, without making the
    frames before them: once the store's ring is full, its frames are relabelled as the ones just before that
    point (``FrameStore.fast_forward``), so the store, the policy's reads and every buffer are those of that point.
    Every chunk is decoded as in the main run (``overlap``: beside the next chunk), so the peak holds the decoder's
    cache and working memory too. A memory that grows with the video's length shows here; a flat one matches the
    short run."""
    device = pipe.model.patch_embedding.weight.device
    session = pipe.session([prompt], [5], None, policy, offload=offload)
    store, f = session.store, pipe.chunk_frames
    with VideoOutput(pipe.codec.chunk_decoder(), overlap=overlap) as output:
        while store.num_frames < store.sink_frames + store.ring_frames + f:  # the ring is full
            output.submit(session.next_chunk())
        step = math.lcm(store.ring_frames, f)
        skip = max(0, math.ceil((pipe.latent_frames(seconds) - store.num_frames) / step) * step)
        store.fast_forward(skip)
        session.index += skip // f
        output.submit(session.next_chunk())  # a new position may select other frames: warm them before timing
        output.wait()
        timer = Timer(device)
        fresh_peak(device)
        seconds_dit = 0.0
        for _ in range(chunks):
            t_dit, chunk = timer(session.next_chunk)
            seconds_dit += t_dit
            output.submit(chunk)
        output.wait()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else store.nbytes()
    return {"seconds": store.num_frames * pipe.frames_per_latent / pipe.fps, "frame": store.num_frames,
            "dit_ms_per_chunk": 1e3 * seconds_dit / chunks, "peak_memory_gb": peak / 1e9,
            "store_host_gb": store.host_nbytes() / 1e9}


def compiled_error(pipe: VideoPipeline, policy: str, prompt: str, offload: str | None = None, chunks: int = 10
                   ) -> float | None:
    """``|compiled - eager| / |eager|`` (L2) of the latents of chunk ``chunks`` (None when nothing is compiled)."""
    if not pipe.model.compiled:
        return None

    def last_chunk() -> torch.Tensor:
        session = pipe.session([prompt], [3], chunks * pipe.model.config.chunk_frames, policy, offload=offload)
        return [c.latents for c in session][-1].double()

    compiled = last_chunk()
    with pipe.model.eager():
        eager = last_chunk()
    return float((compiled - eager).norm() / eager.norm())


def attended_by(chunk: Chunk) -> int:
    """Frames (cached + current) the chunk's first sample attended."""
    return len(chunk.trace[0]["attended"])


def warm_up(pipe: VideoPipeline, policy: str, prompt: str, attended: int, offload: str | None = None) -> None:
    """Run ``policy`` until two chunks at steady state are made and decoded (compiles the steady graph)."""
    session, output, steady = (pipe.session([prompt], [1], None, policy, offload=offload),
                               VideoOutput(pipe.codec.chunk_decoder()), 0)
    while steady < 2:
        chunk = session.next_chunk()
        output.decode(chunk)
        steady += attended_by(chunk) == attended


LAUNCH_CALLS = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch"}
"""Host-side calls that launch device work (a CUDA graph replay is one launch however many kernels it holds)."""


def profile_chunk(pipe: VideoPipeline, policy: str, prompt: str = "a red circle bouncing on a black background",
                  top: int = 12) -> dict:
    """torch.profiler over one steady-state chunk of ``policy`` (DiT only): kernels launched, device time, and the
    kernels that take the most of it (on CPU: top-level operators and their CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    chunk = pipe.model.config.chunk_frames
    attended = build_policy(policy, chunk).steady_frames() + chunk
    session = pipe.session([prompt], [2], None, policy)
    steady = 0
    while steady < 2:  # warm: the profiled chunk compiles nothing
        steady += attended_by(session.next_chunk()) == attended
    timer = Timer(pipe.model.patch_embedding.weight.device)
    cuda = timer.device.type == "cuda"
    timer.sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        session.next_chunk()
        timer.sync()
    idle = None
    if cuda:
        device_events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernels = [(e.name, e.device_time) for e in device_events]
        began = min(e.time_range.start for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU)
        idle = idle_gaps([(e.time_range.start - began, e.time_range.end - began) for e in device_events])
    else:
        kernels = [(e.name, e.cpu_time_total) for e in prof.events() if e.cpu_parent is None]
    launches = sum(e.name in LAUNCH_CALLS for e in prof.events())
    by_name: dict[str, list[float]] = {}
    for name, us in kernels:
        by_name.setdefault(name, []).append(us)
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    return {"policy": policy, "dit": dit_mode(pipe), "kernels": len(kernels), "launches": launches,
            "device_ms": sum(us for _, us in kernels) / 1e3, "idle": idle,
            "top": [{"name": name[:90], "ms": sum(times) / 1e3, "calls": len(times)} for name, times in ranked]}


def idle_gaps(spans: Sequence[tuple[float, float]], top: int = 5) -> dict:
    """Where the device waits: ``spans`` are (start, end) µs of its work, measured from when the host began. Returns
    the span up to the last work's end, the time some work runs (overlapping work counted once) and the longest
    stretches with none (ms, with where they start)."""
    gaps, busy, reached = [], 0.0, 0.0
    for start, end in sorted(spans):
        if start > reached:
            gaps.append((start - reached, reached))
        busy += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    longest = sorted(gaps, reverse=True)[:top]
    return {"span_ms": reached / 1e3, "busy_ms": busy / 1e3, "idle_ms": (reached - busy) / 1e3,
            "longest": [{"ms": length / 1e3, "at_ms": at / 1e3} for length, at in longest]}


def run_bench(
    pipe: VideoPipeline, policies: Sequence[str], seconds: float, long_seconds: float | None, out_json: Path | None,
    profile: bool = False, overlap: bool | None = None, offloads: Sequence[str | None] = (None,),
    late_seconds: float | None = None, codecs: dict[str, Codec] | None = None, graphs: Sequence[bool] = (True,),
    attentions: Sequence[str] = ("auto",), key_tokens: Sequence[int] = (),
) -> dict:
    """Every policy under every offload mode, with every decoder of ``codecs`` (name -> codec; default: the
    pipeline's), every attention backend of ``attentions`` (:data:`~relaxforcing.model.attention.BACKENDS`) and
    with CUDA graphs on and/or off (``graphs``; a compiled CUDA model's only) at ``seconds`` (with
    :func:`late_chunks` at ``late_seconds``), then (if given) each again at ``long_seconds`` for memory flatness;
    with ``profile``, a kernel profile of one steady chunk per policy and graphs setting; with ``key_tokens``, the
    attention kernels alone at those key lengths (:func:`~relaxforcing.bench.kernels.kernel_sweep`)."""
    device = pipe.model.patch_embedding.weight.device
    chunk = pipe.chunk_frames
    codecs = codecs or {"default": pipe.codec}
    graphs = list(dict.fromkeys(graphs)) if pipe.model.cuda_graphs is not None else [False]
    runs = list(dict.fromkeys((p, resolve_offload(o or pipe.offload, build_policy(p, chunk), device), d, g, a)
                              for a in attentions for g in graphs for d in codecs for p in policies
                              for o in offloads))  # dense
    first = {p: next(r for r in runs if r[0] == p) for p, *_ in runs}  # the run that also checks compile

    def bench(p: str, o: str, d: str, g: bool, a: str, length: float, late: float | None, check: bool
              ) -> BenchResult:
        pipe.codec = codecs[d]
        pipe.model.use_attention(a)
        with graphs_as(pipe, g):
            return bench_policy(pipe, p, length, overlap=overlap, offload=o, late_seconds=late,
                                check_compiled=check, decoder=d)

    results = [bench(*run, seconds, late_seconds, first[run[0]] == run) for run in runs]
    long_results = [bench(*run, long_seconds, None, False) for run in runs] if long_seconds else []
    profiles = []
    for a, g in [(a, g) for a in attentions for g in graphs] if profile else []:
        pipe.model.use_attention(a)
        with graphs_as(pipe, g):
            profiles += [profile_chunk(pipe, p) for p in policies]
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "attention_auto": auto_kernel(),
        "dtype": str(pipe.model.patch_embedding.weight.dtype), "model": pipe.name,
        "latent_hw": list(pipe.latent_hw), "steps": list(pipe.schedule.steps), "compiled": pipe.model.compiled,
        "overlap": pipe.model.patch_embedding.weight.is_cuda if overlap is None else overlap,
        "results": [asdict(r) for r in results], "long": [asdict(r) for r in long_results], "profiles": profiles,
        "kernel_sweep": kernel_sweep(pipe, key_tokens, attentions) if key_tokens else [],
    }
    if out_json:
        out_json.write_text(json.dumps(report, indent=2))
    return report


def attended(result: dict) -> str:
    """Attended frames, and the frames' worth of tokens when a policy keeps fewer (e.g. ``63 (19.0)``)."""
    frames, tokens = result["attended_frames"], result.get("attended_tokens")
    return str(frames) if tokens is None or abs(tokens - frames) < 1e-6 else f"{frames} ({tokens:.1f})"


def graphs_as(pipe: VideoPipeline, on: bool) -> AbstractContextManager:
    """CUDA graphs as the model has them (``on``) or off for the ``with`` statement."""
    return nullcontext() if on else pipe.model.without_graphs()


def markdown(report: dict) -> str:
    """The benchmark table, with relax/dense ratios measured in the same run. ``rest of DiT`` is the DiT's time
    beside self-attention (DiT minus self-attention per chunk): projections, feed-forward, cross-attention, norms,
    the memory read."""
    head = ("| policy | DiT | decoder | offload | length | attended frames | self-attn ms/chunk | DiT ms/chunk | "
            "rest of DiT ms/chunk | decode ms/chunk | DiT fps | e2e fps | first frame s | warm-up s | peak GB | "
            "store GB (GPU / host) | workspace GB | decode GB | decoder cache GB |")
    errors = ", ".join(f"{r['policy']} {r['compiled_error']:.2e}" for r in report["results"]
                       if r.get("compiled_error") is not None)
    lines = [f"compiled: {'yes (compiled vs eager, relative L2 of chunk 10: ' + errors + ')' if errors else 'no'}; "
             f"decode overlapped with the next chunk: {'yes' if report.get('overlap') else 'no'}; "
             f"attention (auto): {report['attention_auto']}",
             "", head, "|---" * 19 + "|"]
    for r in report["results"] + report["long"]:
        lines.append(f"| {r['policy']} | {r.get('dit', '')} | {r['decoder']} | {r['offload']} | {r['seconds']:g} s | "
                     f"{attended(r)} | "
                     f"{r['self_attention_ms_per_chunk']:.1f} | {r['dit_ms_per_chunk']:.1f} | "
                     f"{r['dit_ms_per_chunk'] - r['self_attention_ms_per_chunk']:.1f} | "
                     f"{r['decode_ms_per_chunk']:.1f} | {r['dit_fps']:.1f} | {r['e2e_fps']:.1f} | "
                     f"{r['first_frame_s']:.2f} | {r['warmup_s']:.1f} | {r['peak_memory_gb']:.3f} | "
                     f"{r['store_device_gb']:.3f} / {r['store_host_gb']:.3f} | {r['workspace_gb']:.3f} | "
                     f"{r['decode_transient_gb']:.3f} | {r.get('decoder_state_gb', 0):.3f} |")
    late = [r for r in report["results"] if r.get("late")]
    if late:
        lines += ["", "| policy | DiT | decoder | offload | at | DiT ms/chunk | peak GB | host store GB |",
                  "|---" * 8 + "|"]
        lines += [f"| {r['policy']} | {r.get('dit', '')} | {r['decoder']} | {r['offload']} | "
                  f"{r['late']['seconds']:g} s (latent frame {r['late']['frame']}) | "
                  f"{r['late']['dit_ms_per_chunk']:.1f} | {r['late']['peak_memory_gb']:.3f} | "
                  f"{r['late']['store_host_gb']:.3f} |" for r in late]
    by: dict[tuple[str, str], dict] = {}
    for r in report["results"]:
        by.setdefault((r.get("dit", ""), r["policy"].split(":")[0]), r)
    for mode in dict.fromkeys(r.get("dit", "") for r in report["results"]):
        if (mode, "relax") in by and (mode, "dense") in by:
            dense, relax = by[mode, "dense"], by[mode, "relax"]
            lines += ["", f"relax / dense{f' ({mode})' if mode else ''}: self-attention speed-up "
                          f"{dense['self_attention_ms_per_chunk'] / relax['self_attention_ms_per_chunk']:.2f}x, "
                          f"DiT-only {relax['dit_fps'] / dense['dit_fps']:.2f}x, "
                          f"end-to-end {relax['e2e_fps'] / dense['e2e_fps']:.2f}x"]
    for prof in report.get("profiles", []):
        lines += ["", f"{prof['policy']} ({prof.get('dit', '')}): one steady chunk, {prof['kernels']} kernels, "
                      f"{prof['launches']} launch calls (kernels + CUDA graphs), "
                      f"{prof['device_ms']:.1f} ms device time{idle_summary(prof.get('idle'))}", "",
                  "| kernel | ms | calls |", "|---|---|---|"]
        lines += [f"| `{k['name']}` | {k['ms']:.1f} | {k['calls']} |" for k in prof["top"]]
    if report.get("kernel_sweep"):
        lines += ["", sweep_markdown(report["kernel_sweep"])]
    return "\n".join(lines)


def idle_summary(idle: dict | None) -> str:
    """``; device idle 12.3 of 240.1 ms (longest: 4.1 ms at 0.0 ms, ...)`` for :func:`idle_gaps`' numbers."""
    if not idle:
        return ""
    longest = ", ".join(f"{g['ms']:.1f} ms at {g['at_ms']:.1f}" for g in idle["longest"][:3])
    return f"; device idle {idle['idle_ms']:.1f} of {idle['span_ms']:.1f} ms (longest: {longest})"
