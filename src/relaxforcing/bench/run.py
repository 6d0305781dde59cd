"""Side-by-side benchmark of memory policies on one device (timings live here, never in tests or model code)."""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from relaxforcing.memory import build_policy
from relaxforcing.model.attention import attention
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.sampling import Chunk
from relaxforcing.video import VideoWriter


@dataclass
class BenchResult:
    policy: str
    seconds: float
    attended_frames: int
    """Cached frames + the current chunk attended per chunk at steady state."""
    self_attention_ms_per_chunk: float
    """SDPA over the steady-state shapes, all layers, all forwards of one chunk (projections excluded)."""
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
    """Peak device memory (CUDA) or the frame store's size (CPU), GB."""
    store_gb: float


class Timer:
    """Wall-clock timing that waits for queued device work at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        """Wait for the current stream (not for a decode stream running beside it)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def __call__(self, fn: Callable[[], object]) -> tuple[float, object]:
        self.sync()
        began = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - began, out


def attention_ms(pipe: VideoPipeline, attended_frames: int, forwards: int, repeats: int = 3) -> float:
    """Time SDPA at one chunk's shapes (queries: the chunk; keys: every attended frame) for all layers/forwards."""
    cfg, device = pipe.model.config, pipe.model.patch_embedding.weight.device
    dtype = pipe.model.patch_embedding.weight.dtype
    h, w = pipe.model.token_grid(pipe.latent_hw)
    tokens = h * w
    q = torch.randn(1, cfg.chunk_frames * tokens, cfg.num_heads, cfg.head_dim, device=device, dtype=dtype)
    k = torch.randn(1, attended_frames * tokens, cfg.num_heads, cfg.head_dim, device=device, dtype=dtype)
    timer = Timer(device)
    attention(q, k, k)  # warm-up
    best = min(timer(lambda: [attention(q, k, k) for _ in range(cfg.num_layers)])[0] for _ in range(repeats))
    return best * forwards * 1e3


def bench_policy(
    pipe: VideoPipeline, policy: str, seconds: float, prompt: str = "a red circle bouncing on a black background",
    overlap: bool | None = None,
) -> BenchResult:
    """Generate ``seconds`` of video under ``policy`` (batch 1) and time each stage at steady state; ``overlap``
    decodes each chunk while the next is made, as ``generate`` does on CUDA (default: on CUDA)."""
    device = pipe.model.patch_embedding.weight.device
    timer = Timer(device)
    num_frames = pipe.latent_frames(seconds)
    chunk = pipe.model.config.chunk_frames
    attended = build_policy(policy, chunk).steady_frames() + chunk
    forwards = len(pipe.schedule.steps) + 1
    warmup_s, _ = timer(lambda: warm_up(pipe, policy, prompt, attended))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    session = pipe.session([prompt], [0], num_frames, policy)
    dit_s = 0.0
    chunks = frames_before = 0
    first_frame = steady_began = None
    began = time.perf_counter()
    overlap = device.type == "cuda" if overlap is None else overlap
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "bench.mp4", pipe.fps, pipe.upscale) as out:
        with VideoOutput(pipe.codec.chunk_decoder(), [out], overlap=overlap) as output:
            while not session.done:
                t_dit, result = timer(session.next_chunk)
                output.submit(result)
                if first_frame is None:
                    output.wait()
                    first_frame = time.perf_counter() - began
                if attended_by(result) != attended:  # warm-up: the memory is still growing
                    output.wait()
                    out.flush()
                    steady_began, frames_before = time.perf_counter(), output.frames_out
                    continue
                dit_s, chunks = dit_s + t_dit, chunks + 1
            output.wait()
            out.flush()
            wall_s = time.perf_counter() - (steady_began or began)
        decode_s = sum(output.decode_seconds[-chunks:]) if chunks else 0.0
        frames_out = output.frames_out - frames_before
    if not chunks:
        raise ValueError(f"{policy} never reaches its steady state in {seconds:g} s; benchmark a longer video")
    store = session.store
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else store.nbytes()
    return BenchResult(
        policy=policy, seconds=seconds, attended_frames=attended,
        self_attention_ms_per_chunk=attention_ms(pipe, attended, forwards),
        dit_ms_per_chunk=1e3 * dit_s / chunks, decode_ms_per_chunk=1e3 * decode_s / chunks,
        e2e_fps=frames_out / wall_s, dit_fps=frames_out / dit_s,
        first_frame_s=first_frame, warmup_s=warmup_s, steady_chunks=chunks, peak_memory_gb=peak / 1e9,
        store_gb=store.nbytes() / 1e9, compiled_error=compiled_error(pipe, policy, prompt),
    )


def compiled_error(pipe: VideoPipeline, policy: str, prompt: str, chunks: int = 10) -> float | None:
    """``|compiled - eager| / |eager|`` (L2) of the latents of chunk ``chunks`` (None when nothing is compiled)."""
    if not pipe.model.compiled:
        return None

    def last_chunk() -> torch.Tensor:
        session = pipe.session([prompt], [3], chunks * pipe.model.config.chunk_frames, policy)
        return [c.latents for c in session][-1].double()

    compiled = last_chunk()
    with pipe.model.eager():
        eager = last_chunk()
    return float((compiled - eager).norm() / eager.norm())


def attended_by(chunk: Chunk) -> int:
    """Frames (cached + current) the chunk's first sample attended."""
    return len(chunk.trace[0]["attended"])


def warm_up(pipe: VideoPipeline, policy: str, prompt: str, attended: int) -> None:
    """Run ``policy`` until two chunks at steady state are made and decoded (compiles the steady graph)."""
    session, output, steady = pipe.session([prompt], [1], None, policy), VideoOutput(pipe.codec.chunk_decoder()), 0
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
    if cuda:
        kernels = [(e.name, e.device_time) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    else:
        kernels = [(e.name, e.cpu_time_total) for e in prof.events() if e.cpu_parent is None]
    launches = sum(e.name in LAUNCH_CALLS for e in prof.events())
    by_name: dict[str, list[float]] = {}
    for name, us in kernels:
        by_name.setdefault(name, []).append(us)
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    return {"policy": policy, "kernels": len(kernels), "launches": launches,
            "device_ms": sum(us for _, us in kernels) / 1e3,
            "top": [{"name": name[:90], "ms": sum(times) / 1e3, "calls": len(times)} for name, times in ranked]}


def run_bench(
    pipe: VideoPipeline, policies: Sequence[str], seconds: float, long_seconds: float | None, out_json: Path | None,
    profile: bool = False, overlap: bool | None = None,
) -> dict:
    """Every policy at ``seconds``, then (if given) each again at ``long_seconds`` for memory flatness; with
    ``profile``, a kernel profile of one steady chunk per policy."""
    results = [bench_policy(pipe, p, seconds, overlap=overlap) for p in policies]
    long_results = [bench_policy(pipe, p, long_seconds, overlap=overlap) for p in policies] if long_seconds else []
    profiles = [profile_chunk(pipe, p) for p in policies] if profile else []
    device = pipe.model.patch_embedding.weight.device
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(pipe.model.patch_embedding.weight.dtype), "model": pipe.name,
        "latent_hw": list(pipe.latent_hw), "steps": list(pipe.schedule.steps), "compiled": pipe.model.compiled,
        "overlap": pipe.model.patch_embedding.weight.is_cuda if overlap is None else overlap,
        "results": [asdict(r) for r in results], "long": [asdict(r) for r in long_results], "profiles": profiles,
    }
    if out_json:
        out_json.write_text(json.dumps(report, indent=2))
    return report


def markdown(report: dict) -> str:
    """The benchmark table, with relax/dense ratios measured in the same run."""
    head = ("| policy | length | attended frames | self-attn ms/chunk | DiT ms/chunk | decode ms/chunk | DiT fps | "
            "e2e fps | first frame s | warm-up s | peak GB |")
    errors = ", ".join(f"{r['policy']} {r['compiled_error']:.2e}" for r in report["results"]
                       if r.get("compiled_error") is not None)
    lines = [f"compiled: {'yes (compiled vs eager, relative L2 of chunk 10: ' + errors + ')' if errors else 'no'}; "
             f"decode overlapped with the next chunk: {'yes' if report.get('overlap') else 'no'}",
             "", head, "|---" * 11 + "|"]
    for r in report["results"] + report["long"]:
        lines.append(f"| {r['policy']} | {r['seconds']:g} s | {r['attended_frames']} | "
                     f"{r['self_attention_ms_per_chunk']:.1f} | {r['dit_ms_per_chunk']:.1f} | "
                     f"{r['decode_ms_per_chunk']:.1f} | {r['dit_fps']:.1f} | {r['e2e_fps']:.1f} | "
                     f"{r['first_frame_s']:.2f} | {r['warmup_s']:.1f} | {r['peak_memory_gb']:.3f} |")
    by = {r["policy"].split(":")[0]: r for r in report["results"]}
    if "relax" in by and "dense" in by:
        dense, relax = by["dense"], by["relax"]
        lines += ["", f"relax / dense: self-attention speed-up "
                      f"{dense['self_attention_ms_per_chunk'] / relax['self_attention_ms_per_chunk']:.2f}x, "
                      f"DiT-only {relax['dit_fps'] / dense['dit_fps']:.2f}x, "
                      f"end-to-end {relax['e2e_fps'] / dense['e2e_fps']:.2f}x"]
    for prof in report.get("profiles", []):
        lines += ["", f"{prof['policy']}: one steady chunk, {prof['kernels']} kernels, {prof['launches']} launch calls "
                      f"(kernels + CUDA graphs), {prof['device_ms']:.1f} ms device time", "",
                  "| kernel | ms | calls |", "|---|---|---|"]
        lines += [f"| `{k['name']}` | {k['ms']:.1f} | {k['calls']} |" for k in prof["top"]]
    return "\n".join(lines)
