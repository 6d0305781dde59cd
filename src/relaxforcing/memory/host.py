"""Host memory for offloaded frame stores: one block per stored frame, page-locked on a background thread ahead of
need, and recycled between stores."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

Block = tuple[torch.Tensor, torch.Tensor]
"""One frame's keys and values for every layer, each ``[L, B, T, H, D]``."""

_free: dict[tuple, list[Block]] = {}  # (shape, dtype, pinned) -> blocks no store uses
_free_lock = threading.Lock()


def _new_tensor(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    """Uninitialised host memory, page-locked for fast asynchronous copies to and from CUDA devices when ``pin``.

    ``cudaHostRegister`` locks exactly the tensor's pages (``pin_memory=True`` would round each block up to a power
    of two, wasting up to half)."""
    tensor = torch.empty(shape, dtype=dtype)
    if pin:
        status = int(torch.cuda.cudart().cudaHostRegister(tensor.data_ptr(), tensor.nbytes, 0))
        if status != 0:
            raise RuntimeError(f"could not page-lock {tensor.nbytes / 1e9:.2f} GB of host memory for the offloaded "
                               f"frame store (CUDA error {status}); use --offload none")
    return tensor


class HostSlots:
    """``slots`` host blocks of ``shape`` (keys and values of one frame), made in slot order on a background thread
    from the moment the store is created, so a commit rarely waits for one. Blocks go back to a process-wide free
    list when the owner is dropped and serve later stores of the same size: host memory, like PyTorch's caching
    allocators, is kept for the process's lifetime."""

    def __init__(self, slots: int, shape: tuple[int, ...], dtype: torch.dtype, pin: bool):
        key = (shape, dtype, pin)
        _check_room(slots, key)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaxforcing-host")
        self._futures: list[Future[Block]] = [executor.submit(_take, key) for _ in range(slots)]
        executor.shutdown(wait=False)
        weakref.finalize(self, _give_back, key, self._futures)

    def __getitem__(self, slot: int) -> Block:
        return self._futures[slot].result()

    def nbytes(self) -> int:
        """Bytes of the blocks made so far."""
        return sum(k.nbytes + v.nbytes for k, v in (f.result() for f in self._futures if f.done()))


class StagedCopies:
    """Device-to-host copies of keys/values just computed, on a copy stream, without keeping the originals alive.

    Each write is first copied into one of ``depth`` device buffers in the compute stream's order, and the copy stream
    copies to the host from there; the compute stream reuses a buffer only after the copy stream has read it (a GPU-side
    event wait, never a host sync). Handing the originals to the copy stream (``record_stream``) would keep every
    layer of a chunk allocated until the GPU reached its copy, because the host runs a whole clean pass ahead of the
    GPU: 0.86 GB for Wan2.1-1.3B at 832x480."""

    def __init__(self, stream: torch.cuda.Stream, depth: int = 2):
        self._stream = stream
        self._buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * depth
        self._read = [torch.cuda.Event() for _ in range(depth)]  # recorded once the copy stream has read a buffer
        self._next = 0

    def copy(self, keys: torch.Tensor, values: torch.Tensor,
             to_host: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        """Stage ``keys``/``values`` and run ``to_host(staged_keys, staged_values)`` on the copy stream."""
        index, self._next = self._next, (self._next + 1) % len(self._buffers)
        compute = torch.cuda.current_stream(keys.device)
        compute.wait_event(self._read[index])  # no-op before the buffer's first use
        staged = self._buffers[index]
        if staged is None or staged[0].shape != keys.shape or staged[0].dtype != keys.dtype:
            staged = self._buffers[index] = (torch.empty_like(keys), torch.empty_like(values))
        staged[0].copy_(keys)
        staged[1].copy_(values)
        self._stream.wait_stream(compute)
        with torch.cuda.stream(self._stream):
            to_host(*staged)
            self._read[index].record(self._stream)

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in filter(None, self._buffers))


HEADROOM = 0.9
"""Share of the available host memory a store may take: the rest is left to the process and the system."""


def available_host_bytes() -> int | None:
    """Host memory the kernel could hand out now without swapping (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_room(slots: int, key: tuple) -> None:
    """Raise a one-line ValueError before any work when the blocks a new store must make cannot fit in host memory
    (recycled blocks on the free list cost nothing new)."""
    shape, dtype, _ = key
    with _free_lock:
        new_blocks = max(0, slots - len(_free.get(key, [])))
    need = new_blocks * 2 * torch.Size(shape).numel() * dtype.itemsize
    available = available_host_bytes()
    if available is not None and need > HEADROOM * available:
        raise ValueError(f"the offloaded frame store needs {need / 1e9:.1f} GB of host memory and "
                         f"{available / 1e9:.1f} GB are available; use --offload none (the store stays on the GPU) "
                         f"or free host memory")


def _take(key: tuple) -> Block:
    with _free_lock:
        blocks = _free.get(key)
        if blocks:
            return blocks.pop()
    shape, dtype, pin = key
    return _new_tensor(shape, dtype, pin), _new_tensor(shape, dtype, pin)


def _give_back(key: tuple, futures: list[Future[Block]]) -> None:
    """Put every block made (or still being made) back on the free list; blocks not begun are never made."""

    def put(future: Future[Block]) -> None:
        if not future.cancelled() and future.exception() is None:
            with _free_lock:
                _free.setdefault(key, []).append(future.result())

    for future in futures:
        if not future.cancel():
            future.add_done_callback(put)
