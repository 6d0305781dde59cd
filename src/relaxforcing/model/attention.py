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

FLASH_MIN_KEYS = 2048
"""Fewest keys ``auto`` hands to FlashAttention. Shorter key sequences (Wan's 512-token text cross-attention) go to
PyTorch SDPA: there cuDNN's kernel is the faster one on Hopper (docs/benchmarks.md, FlashAttention-3 section)."""

FLASH_PACKAGE = "flash-attn"
"""Backend name of the installed FlashAttention package itself, at every length."""

BACKENDS: dict[str, SDPBackend | None] = {
    "auto": None, FLASH_PACKAGE: None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
"""Attention kernels by name: ``auto`` (FlashAttention-3/2 when importable and the keys are long, else the kernel
PyTorch picks: cuDNN's fused attention on Hopper with torch 2.11), ``flash-attn`` (the FlashAttention package at every
length; half precision on CUDA, no mask) or one of PyTorch's scaled_dot_product_attention kernels."""


def auto_kernel() -> str:
    """What ``auto`` runs for half-precision CUDA tensors without a mask: the FlashAttention package that imports
    (from :data:`FLASH_MIN_KEYS` keys up), else PyTorch's scaled_dot_product_attention (which picks its own kernel)."""
    if _FLASH_NAME is None:
        return "PyTorch SDPA"
    return f"{_FLASH_NAME} (>= {FLASH_MIN_KEYS} keys; fewer: PyTorch SDPA)"


def check_backend(name: str) -> str:
    """``name`` if it is a known attention backend that can run here, else a one-line ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"--attention {name!r}: choose {', '.join(BACKENDS)}")
    if name == FLASH_PACKAGE and _FLASH is None:
        raise ValueError(f"--attention {name}: no FlashAttention package imports ({' or '.join(_FLASH_MODULES)}; "
                         "docs/real-model.md builds FlashAttention-3)")
    return name


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "auto"
) -> torch.Tensor:
    """Softmax attention over ``[B, L, H, D]`` tensors; ``mask`` ``[B or 1, 1, Lq, Lk]`` bool, True = attend.

    ``auto`` uses FlashAttention when it is importable, the tensors are half precision on CUDA, no mask is given and
    there are at least :data:`FLASH_MIN_KEYS` keys, PyTorch's scaled_dot_product_attention otherwise;
    ``flash-attn`` always uses FlashAttention; any other :data:`BACKENDS` name runs that SDPA kernel alone (an error
    where it cannot run these inputs). Returns ``[B, Lq, H, D]``.
    """
    if backend == FLASH_PACKAGE:
        check_backend(backend)
        if mask is not None:
            raise ValueError(f"--attention {FLASH_PACKAGE} takes no attention mask")
    if backend == FLASH_PACKAGE or (
            backend == "auto" and _FLASH is not None and mask is None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16) and k.shape[1] >= FLASH_MIN_KEYS):
        out = _FLASH(q, k, v)
        return out[0] if isinstance(out, tuple) else out
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend == "auto":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    with sdpa_kernel(BACKENDS[backend]):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
