"""CUDA graphs over the compiled chunk forward: one replay per denoising step instead of ~800 kernel launches."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

Inputs = Sequence[torch.Tensor | None]
GraphedFn = Callable[[Inputs, list, Inputs], torch.Tensor]
"""``(copied, context_kv, in_place) -> output``: the forward a graph is captured from (see :class:`ForwardGraphs`)."""


@dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph
    copied: list[torch.Tensor | None]
    context: list[tuple[torch.Tensor, torch.Tensor]]
    output: torch.Tensor
    loaded_context: weakref.ref | None = None
    """The context whose keys/values are in :attr:`context` now (its first tensor)."""


class ForwardGraphs:
    """Captures ``fn(copied, context_kv, in_place)`` in a CUDA graph per input signature and replays it.

    ``in_place`` tensors (the memory's keys/values: a workspace or the store itself, kept at one address from chunk to
    chunk at a policy's steady state) are read where they lie: their addresses are part of the signature. ``copied``
    tensors (latents, timesteps, RoPE factors; None entries stay None) are copied into the graph's own buffers at
    every call, and the cross-attention keys/values ``context_kv`` only when they are another prompt's. Shapes are
    captured after ``warmup`` ordinary calls (compilation and kernel selection happen there, never during a capture);
    new memory addresses of known shapes (a new stream) are captured at their first call. The ``max_graphs`` most
    recently used graphs are kept.

    The output is returned as a copy, so it stays valid after the next replay.
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
        self._lock = threading.Lock()
        self.replays = 0
        """Calls answered by a graph replay."""
        self.failed: str | None = None
        """Why capturing failed (graphs are then off for good and every call runs ``fn``)."""

    def __call__(self, copied: Inputs, context_kv: list[tuple[torch.Tensor, torch.Tensor]], in_place: Inputs
                 ) -> torch.Tensor:
        shapes = tuple(signature(a) for a in (*copied, context_kv[0][0], *in_place))
        key = (shapes, *(None if a is None else a.data_ptr() for a in in_place))
        with self._lock:  # streams on other threads (the viewer's jobs) capture and replay one at a time
            entry = self._graphs.get(key)
            if entry is None and (self.failed is not None or self._calls.get(shapes, 0) < self.warmup):
                self._calls[shapes] = self._calls.get(shapes, 0) + 1
            elif entry is None:
                entry = self._capture(key, copied, context_kv, in_place, warm=shapes in self._captured)
                if entry is not None:
                    self._captured.add(shapes)
            if entry is not None:
                return self._replay(key, entry, copied, context_kv)
        return self.fn(copied, context_kv, in_place)  # compilation and kernel selection, or graphs off

    def _replay(self, key: tuple, entry: _Entry, copied: Inputs, context_kv: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> torch.Tensor:
        self._graphs.move_to_end(key)
        for static, given in zip(entry.copied, copied, strict=True):
            if static is not None:
                static.copy_(given)
        if entry.loaded_context is None or entry.loaded_context() is not context_kv[0][0]:
            for (k, v), (static_k, static_v) in zip(context_kv, entry.context, strict=True):
                static_k.copy_(k)
                static_v.copy_(v)
            entry.loaded_context = weakref.ref(context_kv[0][0])
        entry.graph.replay()
        self.replays += 1
        return entry.output.clone()

    def _capture(self, key: tuple, copied: Inputs, context_kv: list[tuple[torch.Tensor, torch.Tensor]],
                 in_place: Inputs, warm: bool) -> _Entry | None:
        """A graph of ``fn`` reading ``in_place`` where it lies and the other inputs from copies; ``warm``: these
        shapes were captured before (the capture stream's handles and workspaces are ready)."""
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        self._stream = self._stream or torch.cuda.Stream(self.device)
        static = [None if a is None else a.clone() for a in copied]
        context = [(k.clone(), v.clone()) for k, v in context_kv]
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        graph = torch.cuda.CUDAGraph()
        try:
            if not warm:
                with torch.cuda.stream(self._stream):  # warm the capture stream (cuBLAS/cuDNN handles, workspaces)
                    self.fn(static, context, in_place)
            # thread_local: another thread (a chunk decoding beside the DiT) may use CUDA during the capture
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                output = self.fn(static, context, in_place)
        except RuntimeError as error:  # an operation that cannot be captured: run without graphs from now on
            self.failed = " ".join(str(error).split())[:300]
            log.warning("CUDA graphs off, the compiled forward runs without them: %s", self.failed)
            current.wait_stream(self._stream)
            return None
        current.wait_stream(self._stream)
        entry = _Entry(graph, static, context, output, weakref.ref(context_kv[0][0]))
        self._graphs[key] = entry
        return entry


def signature(tensor: torch.Tensor | None) -> tuple | None:
    return None if tensor is None else (tuple(tensor.shape), tensor.stride(), tensor.dtype)
