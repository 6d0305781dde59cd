"""CUDA graphs over the compiled chunk forward: one replay per denoising step instead of ~800 kernel launches."""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

GraphedFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, list, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x, t, rope, context_kv, memory_keys, memory_values) -> output``: the forward a graph is captured from."""


@dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    t: torch.Tensor
    rope: torch.Tensor
    context: list[tuple[torch.Tensor, torch.Tensor]]
    output: torch.Tensor
    loaded_context: weakref.ref | None = None
    """The context whose keys/values are in :attr:`context` now (its first tensor)."""


class ForwardGraphs:
    """Captures ``fn`` in a CUDA graph per input signature and replays it.

    A signature is the shapes and dtypes of the inputs and the addresses of the memory's keys/values: the memory
    workspace is reused from chunk to chunk at a policy's steady state, so it is read in place, while ``x``, ``t``
    and ``rope`` are copied into the graph's own input buffers at every call, and the cross-attention keys/values
    only when they are another prompt's. Shapes are captured after ``warmup`` ordinary calls (compilation and
    kernel selection happen there, never during a capture); a new memory workspace of known shapes (a new stream)
    is captured at its first call. The ``max_graphs`` most recently used graphs are kept.

    Only calls without a KV capture go through here (the denoising steps); the output is returned as a copy, so it
    stays valid after the next replay.
    """

    def __init__(self, fn: GraphedFn, device: torch.device, warmup: int = 2, max_graphs: int = 4):
        self.fn = fn
        self.device = device
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _Entry] = OrderedDict()
        self._calls: dict[tuple, int] = {}  # input shapes -> calls run without a graph
        self._captured: set[tuple] = set()  # input shapes captured before
        self._stream: torch.cuda.Stream | None = None
        self.replays = 0
        """Calls answered by a graph replay."""
        self.failed: str | None = None
        """Why capturing failed (graphs are then off for good and every call runs ``fn``)."""

    def __call__(self, x: torch.Tensor, t: torch.Tensor, rope: torch.Tensor,
                 context_kv: list[tuple[torch.Tensor, torch.Tensor]], memory_keys: torch.Tensor,
                 memory_values: torch.Tensor) -> torch.Tensor:
        shapes = tuple(signature(a) for a in (x, t, rope, context_kv[0][0], memory_keys, memory_values))
        key = (shapes, memory_keys.data_ptr(), memory_values.data_ptr())
        entry = self._graphs.get(key)
        if entry is None:
            if self.failed is not None or self._calls.get(shapes, 0) < self.warmup:  # compile, select kernels
                self._calls[shapes] = self._calls.get(shapes, 0) + 1
                return self.fn(x, t, rope, context_kv, memory_keys, memory_values)
            entry = self._capture(key, x, t, rope, context_kv, memory_keys, memory_values,
                                  warm=shapes in self._captured)
            if entry is None:
                return self.fn(x, t, rope, context_kv, memory_keys, memory_values)
            self._captured.add(shapes)
        self._graphs.move_to_end(key)
        entry.x.copy_(x)
        entry.t.copy_(t)
        entry.rope.copy_(rope)
        if entry.loaded_context is None or entry.loaded_context() is not context_kv[0][0]:
            for (k, v), (static_k, static_v) in zip(context_kv, entry.context, strict=True):
                static_k.copy_(k)
                static_v.copy_(v)
            entry.loaded_context = weakref.ref(context_kv[0][0])
        entry.graph.replay()
        self.replays += 1
        return entry.output.clone()

    def _capture(self, key: tuple, x: torch.Tensor, t: torch.Tensor, rope: torch.Tensor,
                 context_kv: list[tuple[torch.Tensor, torch.Tensor]], memory_keys: torch.Tensor,
                 memory_values: torch.Tensor, warm: bool) -> _Entry | None:
        """A graph of ``fn`` reading the memory where it lies and the other inputs from copies; ``warm``: these shapes
        were captured before (the capture stream's handles and workspaces are ready)."""
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        self._stream = self._stream or torch.cuda.Stream(self.device)
        static = [x.clone(), t.clone(), rope.clone(), [(k.clone(), v.clone()) for k, v in context_kv]]
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        graph = torch.cuda.CUDAGraph()
        try:
            if not warm:
                with torch.cuda.stream(self._stream):  # warm the capture stream (cuBLAS/cuDNN handles, workspaces)
                    self.fn(*static, memory_keys, memory_values)
            # thread_local: another thread (a chunk decoding beside the DiT) may use CUDA during the capture
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                output = self.fn(*static, memory_keys, memory_values)
        except RuntimeError as error:  # an operation that cannot be captured: run without graphs from now on
            self.failed = " ".join(str(error).split())[:300]
            log.warning("CUDA graphs off, the compiled forward runs without them: %s", self.failed)
            current.wait_stream(self._stream)
            return None
        current.wait_stream(self._stream)
        entry = _Entry(graph, *static, output, weakref.ref(context_kv[0][0]))
        self._graphs[key] = entry
        return entry

    def clear(self) -> None:
        """Drop every graph (and its memory pool)."""
        self._graphs.clear()


def signature(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tensor.stride(), tensor.dtype
