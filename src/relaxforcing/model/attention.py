"""Attention kernel selection: FlashAttention-3/2 on CUDA when importable, PyTorch SDPA otherwise."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _load_flash() -> Callable | None:
    for module in ("flash_attn_interface", "flash_attn"):  # FA3 first, then FA2
        try:
            return importlib.import_module(module).flash_attn_func
        except (ImportError, AttributeError):
            continue
    return None


_FLASH = _load_flash()


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention over ``[B, L, H, D]`` tensors; ``mask`` ``[B or 1, 1, Lq, Lk]`` bool, True = attend.

    Uses FlashAttention when it is importable, the tensors are half precision on CUDA and no mask is given;
    PyTorch's scaled_dot_product_attention otherwise. Returns ``[B, Lq, H, D]``.
    """
    if _FLASH is not None and mask is None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        out = _FLASH(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)
