"""Attention kernel selection: FlashAttention-3/2 on CUDA when importable, PyTorch SDPA otherwise, or one SDPA
kernel by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

_FLASH_MODULES = {"flash_attn_interface": "FlashAttention-3", "flash_attn": "FlashAttention-2"}  # tried in order


def _load_flash() -> tuple[Callable | None, str | None]:
    """``flash_attn_func`` of the first FlashAttention package that imports, and the package's name."""
    for module, name in _FLASH_MODULES.items():
        try:
            return importlib.import_module(module).flash_attn_func, name
        except (ImportError, AttributeError):
            continue
    return None, None


_FLASH, _FLASH_NAME = _load_flash()

BACKENDS: dict[str, SDPBackend | None] = {
    "auto": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
"""Attention kernels by name: ``auto`` (FlashAttention-3/2 when importable, else the kernel PyTorch picks: cuDNN's
fused attention on Hopper with torch 2.11) or one of PyTorch's scaled_dot_product_attention kernels."""


def auto_kernel() -> str:
    """What ``auto`` runs for half-precision CUDA tensors without a mask: the FlashAttention package that imports,
    else PyTorch's scaled_dot_product_attention (which picks its own kernel)."""
    return _FLASH_NAME or "PyTorch SDPA"


def check_backend(name: str) -> str:
    """``name`` if it is a known attention backend, else a one-line ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"--attention {name!r}: choose {', '.join(BACKENDS)}")
    return name


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Softmax attention over ``[B, L, H, D]`` tensors; ``mask`` ``[B or 1, 1, Lq, Lk]`` bool, True = attend.

    ``auto`` uses FlashAttention when it is importable, the tensors are half precision on CUDA and no mask is
    given, PyTorch's scaled_dot_product_attention otherwise; any other :data:`BACKENDS` name runs that SDPA kernel
    alone (an error where it cannot run these inputs). Returns ``[B, Lq, H, D]``.
    """
    if backend == "auto" and _FLASH is not None and mask is None and q.is_cuda and q.dtype in (torch.float16,
                                                                                              torch.bfloat16):
        out = _FLASH(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend == "auto":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
