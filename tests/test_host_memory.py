"""Host memory for offloaded stores: a store that cannot fit is refused before any work."""

from __future__ import annotations

import pytest
import torch

from relaxforcing.memory import host
from relaxforcing.memory.host import HostSlots, available_host_bytes


def test_available_host_memory_is_read_on_linux() -> None:
    available = available_host_bytes()
    assert available is None or available > 0


def test_a_store_larger_than_the_available_memory_is_refused_at_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (2, 1, 64, 2, 8)  # one frame: 2048 values, keys and values 8 KiB in float32
    monkeypatch.setattr(host, "available_host_bytes", lambda: 100_000)
    with pytest.raises(ValueError, match=r"needs .* GB of host memory and .* GB are available; use --offload none"):
        HostSlots(12, shape, torch.float32, pin=False)  # 12 x 16 KiB > 0.9 x 100 kB
    slots = HostSlots(5, shape, torch.float32, pin=False)  # 80 KiB fits
    assert slots[4][0].shape == shape


def test_recycled_blocks_need_no_new_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (3, 1, 16, 2, 8)
    slots = HostSlots(4, shape, torch.float32, pin=False)
    blocks = [slots[i] for i in range(4)]
    del slots, blocks  # back on the free list
    monkeypatch.setattr(host, "available_host_bytes", lambda: 0)
    again = HostSlots(4, shape, torch.float32, pin=False)
    assert again[3][1].shape == shape
