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
    """Video frames per second, wall clock over every chunk after the first (warm-up): DiT + decode + mp4 writing
    (on the writer's own thread), as ``generate`` runs them."""
    dit_fps: float
    first_frame_s: float
    peak_memory_gb: float
    """Peak device memory (CUDA) or the frame store's size (CPU), GB."""
    store_gb: float


class Timer:
    """Wall-clock timing that waits for queued device work at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

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
    pipe: VideoPipeline, policy: str, seconds: float, prompt: str = "a red circle bouncing on a black background"
) -> BenchResult:
    """Generate ``seconds`` of video under ``policy`` (batch 1) and time each stage."""
    device = pipe.model.patch_embedding.weight.device
    timer = Timer(device)
    num_frames = pipe.latent_frames(seconds)
    chunk = pipe.model.config.chunk_frames
    steady = build_policy(policy, chunk).select(_SteadyStateStore(num_frames - chunk), num_frames - chunk)
    attended = steady.frames.shape[1] + chunk
    forwards = len(pipe.schedule.steps) + 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    session = pipe.session([prompt], [0], num_frames, policy)
    dit_s = decode_s = 0.0
    frames_out = 0
    first_frame = None
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, VideoWriter(Path(tmp) / "bench.mp4", pipe.fps, pipe.upscale) as out:
        output = VideoOutput(pipe.codec.chunk_decoder(), [out])
        while not session.done:
            t_dit, result = timer(session.next_chunk)
            t_dec, frames = timer(lambda: output.decode(result))  # noqa: B023
            output.write(frames)  # encoded on the writer's thread while the next chunk runs
            if result.index == 0:  # the first chunk pays for warm-up (kernel selection, allocations): not counted
                first_frame = time.perf_counter() - began
                out.flush()
                steady_began = time.perf_counter()
            else:
                dit_s, decode_s = dit_s + t_dit, decode_s + t_dec
                frames_out += frames.shape[1]
        out.flush()
        wall_s = time.perf_counter() - steady_began
    chunks = num_frames // chunk - 1
    store = session.store
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else store.nbytes()
    return BenchResult(
        policy=policy, seconds=seconds, attended_frames=attended,
        self_attention_ms_per_chunk=attention_ms(pipe, attended, forwards),
        dit_ms_per_chunk=1e3 * dit_s / chunks, decode_ms_per_chunk=1e3 * decode_s / chunks,
        e2e_fps=frames_out / wall_s, dit_fps=frames_out / dit_s,
        first_frame_s=first_frame or 0.0, peak_memory_gb=peak / 1e9, store_gb=store.nbytes() / 1e9,
    )


class _SteadyStateStore:
    """A ``StoreView`` for a policy's steady-state layout (frame choice, not scores, matters for timing)."""

    batch = 1

    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.ones(1, 8) + frames.float().mean(), dim=-1)


def run_bench(
    pipe: VideoPipeline, policies: Sequence[str], seconds: float, long_seconds: float | None, out_json: Path | None
) -> dict:
    """Every policy at ``seconds``, then (if given) each again at ``long_seconds`` for memory flatness."""
    results = [bench_policy(pipe, p, seconds) for p in policies]
    long_results = [bench_policy(pipe, p, long_seconds) for p in policies] if long_seconds else []
    device = pipe.model.patch_embedding.weight.device
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "dtype": str(pipe.model.patch_embedding.weight.dtype), "model": pipe.name,
        "latent_hw": list(pipe.latent_hw), "steps": list(pipe.schedule.steps),
        "results": [asdict(r) for r in results], "long": [asdict(r) for r in long_results],
    }
    if out_json:
        out_json.write_text(json.dumps(report, indent=2))
    return report


def markdown(report: dict) -> str:
    """The benchmark table, with relax/dense ratios measured in the same run."""
    head = ("| policy | length | attended frames | self-attn ms/chunk | DiT ms/chunk | decode ms/chunk | DiT fps | "
            "e2e fps | first frame s | peak GB |")
    lines = [head, "|---" * 10 + "|"]
    for r in report["results"] + report["long"]:
        lines.append(f"| {r['policy']} | {r['seconds']:g} s | {r['attended_frames']} | "
                     f"{r['self_attention_ms_per_chunk']:.1f} | {r['dit_ms_per_chunk']:.1f} | "
                     f"{r['decode_ms_per_chunk']:.1f} | {r['dit_fps']:.1f} | {r['e2e_fps']:.1f} | "
                     f"{r['first_frame_s']:.2f} | {r['peak_memory_gb']:.3f} |")
    by = {r["policy"].split(":")[0]: r for r in report["results"]}
    if "relax" in by and "dense" in by:
        lines.append("")
        lines.append(f"relax / dense: self-attention speed-up "
                     f"{by['dense']['self_attention_ms_per_chunk'] / by['relax']['self_attention_ms_per_chunk']:.2f}x, "
                     f"end-to-end speed-up {by['relax']['e2e_fps'] / by['dense']['e2e_fps']:.2f}x")
    return "\n".join(lines)
