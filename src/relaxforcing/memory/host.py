"""Host memory for offloaded frame stores: one block per stored frame, page-locked on a background thread ahead of
need, and recycled between stores."""

from __future__ import annotations

import threading
import weakref
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
