"""Wan 3D rotary position embedding computed from arbitrary positions (no fixed-size table)."""

from __future__ import annotations

import torch

from relaxforcing.devices import upload

THETA = 10000.0


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to the (time, height, width) axes: 22/21/21 for head_dim 128."""
    pairs = head_dim // 2
    return pairs - 2 * (pairs // 3), pairs // 3, pairs // 3


def axis_frequencies(head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-axis angular frequencies in float64, exactly as Wan's `rope_params` builds them."""
    freqs = []
    for n in axis_pairs(head_dim):
        dim = 2 * n
        freqs.append(1.0 / THETA ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    return tuple(freqs)


def rotation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Real dtype the rotation of activations of ``dtype`` is computed in (see :func:`apply_rope`)."""
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


def rope_factors(
    frame_positions: torch.Tensor, grid_hw: tuple[int, int], head_dim: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Rotation factors (cos, sin) for frames at the given temporal positions.

    Args:
        frame_positions: ``[..., F]`` temporal position of each frame (any integer, no upper bound).
        grid_hw: token grid (h, w) of one frame.
        head_dim: attention head width.
        dtype: real dtype of the result (angles are always computed in float64).

    Returns:
        ``[..., F * h * w, 2, head_dim]``: per channel the cosine of its pair's angle, then the sine signed for
        :func:`apply_rope` (-sin on the pair's first channel, +sin on its second); tokens in (frame, row, column)
        order.
    """
    h, w = grid_hw
    ft, fh, fw = (upload(f, frame_positions.device) for f in axis_frequencies(head_dim))
    pos = frame_positions.to(torch.float64)
    ang_t = pos[..., :, None] * ft  # [..., F, nt]
    ang_h = torch.arange(h, dtype=torch.float64, device=pos.device)[:, None] * fh  # [h, nh]
    ang_w = torch.arange(w, dtype=torch.float64, device=pos.device)[:, None] * fw  # [w, nw]
    lead = pos.shape[:-1]
    n_frames = pos.shape[-1]
    angles = torch.cat(
        [
            ang_t[..., :, None, None, :].expand(*lead, n_frames, h, w, ft.numel()),
            ang_h[:, None, :].expand(*lead, n_frames, h, w, fh.numel()),
            ang_w[None, :, :].expand(*lead, n_frames, h, w, fw.numel()),
        ],
        dim=-1,
    )
    # cos and sin of float64 angles, as the reference's torch.polar gives them, then rounded to ``dtype``
    pairs = torch.view_as_real(torch.polar(torch.ones_like(angles), angles))  # [..., F, h, w, D/2, (cos, sin)]
    cos, sin = pairs.flatten(-5, -3).unbind(-1)  # [..., F*h*w, D/2]
    signed_sin = torch.stack([-sin, sin], dim=-1).flatten(-2)  # -sin on a pair's first channel, +sin on its second
    return torch.stack([cos.repeat_interleave(2, dim=-1), signed_sin], dim=-2).to(dtype)  # [..., F*h*w, 2, D]


def apply_rope(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, L, H, D]`` by ``factors`` ``[B or 1, L, 2, D]``.

    The complex product (a + ib)(cos + i sin) in real arithmetic, ``x * cos + swap_pairs(x) * (-sin, sin)``, so that
    ``torch.compile`` fuses it (it does not generate code for complex tensors); every element is computed as the
    complex product computes it (a cos - b sin, b cos + a sin), so on CPU it is bitwise that product. Float32
    inputs are rotated in float64, as the reference does. Half-precision inputs are rotated in float32: the result
    differs from float64 rotation by ~1e-7 relative, far below bf16/fp16 resolution.
    """
    cos, signed_sin = factors.to(rotation_dtype(x.dtype))[:, :, None].unbind(-2)  # [B or 1, L, 1, D] each
    wide = x.to(cos.dtype)
    first, second = wide.unflatten(-1, (-1, 2)).unbind(-1)
    swapped = torch.stack([second, first], dim=-1).flatten(-2)  # (b, a) for every pair (a, b)
    return (wide * cos + swapped * signed_sin).to(x.dtype)
