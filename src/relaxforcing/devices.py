"""Moving small host tensors to a device without making the host wait."""

from __future__ import annotations

import torch


def upload(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; on CUDA through page-locked memory and an asynchronous copy, so the host does not
    wait for the device's queue (a plain ``.to("cuda")`` of pageable memory synchronises)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
