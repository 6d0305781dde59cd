"""Attention kernels alone, at a chunk's queries: the self-attention time a policy's memory costs per chunk, and
each kernel's device time and error across key lengths (e.g. FlashAttention-3 against cuDNN from text-length to
dense-window-length keys)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch

from relaxforcing.bench.timer import Timer
from relaxforcing.model.attention import attention
from relaxforcing.pipeline import VideoPipeline

_REFERENCE_QUERIES = 1024  # float32 reference attention in blocks of this many queries (bounded memory)


def head_tokens(pipe: VideoPipeline, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` random tokens ``[1, n, H, D]`` in the model's attention heads, dtype and device."""
    cfg, weight = pipe.model.config, pipe.model.patch_embedding.weight
    return torch.randn(1, n, cfg.num_heads, cfg.head_dim, generator=generator, device=weight.device,
                       dtype=weight.dtype)


def chunk_tokens(pipe: VideoPipeline) -> int:
    """Tokens in one chunk of the pipeline's latents (the queries of every attention)."""
    h, w = pipe.model.token_grid(pipe.latent_hw)
    return pipe.model.config.chunk_frames * h * w


def attention_ms(pipe: VideoPipeline, key_tokens: Sequence[int], forwards: int, repeats: int = 3) -> float:
    """Time the attention kernel at the chunks' shapes (queries: a chunk; keys: ``key_tokens`` of each chunk, memory
    and chunk) for all layers/forwards; the mean over the chunks."""
    device, layers = pipe.model.patch_embedding.weight.device, pipe.model.config.num_layers
    q, timer, total = head_tokens(pipe, chunk_tokens(pipe)), Timer(device), 0.0
    backend = pipe.model.attention_backend
    for length, chunks in Counter(key_tokens).items():
        k = head_tokens(pipe, length)
        attention(q, k, k, backend=backend)  # warm-up
        every_layer = lambda k=k: [attention(q, k, k, backend=backend) for _ in range(layers)]  # noqa: E731
        total += min(timer(every_layer)[0] for _ in range(repeats)) * chunks
    return total / len(key_tokens) * forwards * 1e3


def ms_per_call(call: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Device time of one ``call``: on CUDA, ``repeats`` calls captured in one CUDA graph and replayed, so no host
    overhead sits between the kernels (as in the compiled model's graphs); elsewhere, wall clock of ``repeats``
    calls."""
    timer = Timer(device)
    if device.type != "cuda":
        return timer(lambda: [call() for _ in range(repeats)])[0] / repeats * 1e3
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            call()
    graph.replay()  # warm-up
    began = timer.mark()
    graph.replay()
    return timer.between(began, timer.mark()) / repeats * 1e3


def kernel_sweep(pipe: VideoPipeline, key_tokens: Sequence[int], backends: Sequence[str], repeats: int = 20
                 ) -> list[dict]:
    """Per key length and backend: ms per call (:func:`ms_per_call`) of one attention at a chunk's queries (the
    model's heads, head size and dtype, on its device) over ``key_tokens`` random keys, and the output's relative L2
    distance from float32 attention of the same inputs."""
    device = pipe.model.patch_embedding.weight.device
    generator = torch.Generator(device).manual_seed(0)
    q, rows = head_tokens(pipe, chunk_tokens(pipe), generator), []
    for keys in key_tokens:
        k, v = head_tokens(pipe, keys, generator), head_tokens(pipe, keys, generator)
        reference = torch.cat([attention(q[:, i:i + _REFERENCE_QUERIES].float(), k.float(), v.float(), backend="math")
                               for i in range(0, q.shape[1], _REFERENCE_QUERIES)], dim=1)
        for backend in backends:
            out = attention(q, k, v, backend=backend).float()  # also the warm-up
            ms = ms_per_call(lambda k=k, v=v, b=backend: attention(q, k, v, backend=b), repeats, device)
            rows.append({"queries": q.shape[1], "keys": keys, "backend": backend, "ms": ms,
                         "error": ((out - reference).norm() / reference.norm()).item()})
    return rows


def sweep_markdown(rows: Sequence[dict]) -> str:
    """One row per key length: each backend's ms per call, the speed-up of the first backend over each other one,
    and each backend's relative L2 error."""
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    by = {(r["keys"], r["backend"]): r for r in rows}
    first, others = backends[0], backends[1:]
    head = (["keys"] + [f"{b} ms" for b in backends] + [f"{first} speed-up over {b}" for b in others]
            + [f"{b} rel. L2" for b in backends])
    lines = [f"attention kernels alone: {rows[0]['queries']} queries (one chunk), one call", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for keys in dict.fromkeys(r["keys"] for r in rows):
        cells = [str(keys)] + [f"{by[keys, b]['ms']:.3f}" for b in backends]
        cells += [f"{by[keys, b]['ms'] / by[keys, first]['ms']:.2f}x" for b in others]
        cells += [f"{by[keys, b]['error']:.1e}" for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
