"""Vectorised torch renderer of toy worlds (any device), returning ground-truth tracks with the video."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from relaxforcing.devices import upload
from relaxforcing.toyworld.scene import FRAME_SIZE, KINDS, OBJECT_COLORS, RING_INNER
from relaxforcing.toyworld.world import World


@dataclass(frozen=True)
class Tracks:
    """Ground truth per object and frame; objects are in draw order, batch padding slots are NaN / 0."""

    center: torch.Tensor
    """Exact centre ``(x, y)`` in pixels, float32 ``[..., T, N, 2]``."""
    visibility: torch.Tensor
    """Fraction of the object's own pixels not hidden by objects drawn after it, float32 ``[..., T, N]``."""


def render(
    world: World, num_frames: int, device: torch.device | str = "cpu", start_frame: int = 0
) -> tuple[torch.Tensor, Tracks]:
    """Render frames ``start_frame + [0, num_frames)`` of one world.

    Returns:
        The video, uint8 sRGB ``[T, H, W, 3]``, and its tracks (``[T, N, 2]`` and ``[T, N]``).
    """
    video, tracks = render_batch([world], num_frames, device, start_frame)
    return video[0], Tracks(tracks.center[0], tracks.visibility[0])


def render_batch(
    worlds: Sequence[World], num_frames: int, device: torch.device | str = "cpu", start_frame: int = 0
) -> tuple[torch.Tensor, Tracks]:
    """Render the same frame range of several worlds at once; anti-aliased shapes, deterministic.

    Returns:
        The videos, uint8 sRGB ``[B, T, H, W, 3]``, and tracks padded to the largest object count N
        (``[B, T, N, 2]``, ``[B, T, N]``).
    """
    if not worlds:
        raise ValueError("render_batch needs at least one world")
    b, t, n = len(worlds), num_frames, max(len(w.scene.looks) for w in worlds)
    center = np.full((b, t, n, 2), np.nan)
    kind = np.zeros((b, n), dtype=np.int64)
    radius = np.zeros((b, n), dtype=np.float32)
    color = np.zeros((b, n, 3), dtype=np.uint8)
    for i, world in enumerate(worlds):
        looks = world.scene.looks
        center[i, :, : len(looks)] = world.trajectory(num_frames, start_frame)
        kind[i, : len(looks)] = [KINDS.index(look.kind) for look in looks]
        radius[i, : len(looks)] = world.radii
        color[i, : len(looks)] = [OBJECT_COLORS[look.color] for look in looks]
    background = np.stack([w.scene.background.image() for w in worlds])  # [B, H, W, 3]

    # Asynchronous uploads: a training loop's host keeps running ahead of the device while it renders.
    center_t = upload(torch.from_numpy(center).float(), device)  # [B, T, N, 2], NaN in empty slots
    xy = torch.nan_to_num(center_t)
    kind_t, radius_t = upload(torch.from_numpy(kind), device), upload(torch.from_numpy(radius), device)
    color_t = upload(torch.from_numpy(color), device).float()  # [B, N, 3]
    grid = torch.arange(FRAME_SIZE, dtype=torch.float32, device=device) + 0.5  # pixel centres
    video = upload(torch.from_numpy(background), device).float()[:, None].expand(b, t, -1, -1, -1)
    alphas = []
    for slot in range(n):  # draw order: later objects cover earlier ones
        dx = grid - xy[:, :, slot, 0, None, None]  # [B, T, 1, W]
        dy = grid[:, None] - xy[:, :, slot, 1, None, None]  # [B, T, H, 1]
        alpha = shape_coverage(dx, dy, kind_t[:, slot], radius_t[:, slot])  # [B, T, H, W]
        video = video + alpha[..., None] * (color_t[:, slot, None, None, None] - video)
        alphas.append(alpha)
    # Visible share of each object: its coverage times what the objects drawn after it let through.
    through = torch.ones_like(alphas[0])
    visible = []
    for alpha in reversed(alphas):
        visible.append((alpha * through).sum((-2, -1)) / alpha.sum((-2, -1)).clamp(min=1e-6))
        through = through * (1 - alpha)
    visibility = torch.stack(visible[::-1], -1)  # [B, T, N]
    return video.round().to(torch.uint8), Tracks(center_t, visibility)


def to_float(video: torch.Tensor) -> torch.Tensor:
    """Map uint8 video ``[..., T, H, W, 3]`` to float32 ``[..., T, 3, H, W]`` in [-1, 1] for training."""
    if video.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 video, got {video.dtype}")
    return video.movedim(-1, -3).float() / 127.5 - 1.0


def shape_coverage(dx: torch.Tensor, dy: torch.Tensor, kind: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Anti-aliased pixel coverage in [0, 1], ``[B, T, H, W]``, of one object slot per batch item.

    ``dx``, ``dy``: pixel centre minus object centre; ``kind``, ``radius``: ``[B]`` (radius 0 = empty slot).
    Squares are exact box overlaps; the others use 0.5 minus the signed distance to the outline.
    """
    r = radius.view(-1, 1, 1, 1)
    d = torch.sqrt(dx * dx + dy * dy)
    # Equilateral, apex up, centroid at the centre: its three sides lie at distance r/2.
    sides = torch.maximum(torch.maximum(dy, (math.sqrt(3) * dx - dy) / 2), (-math.sqrt(3) * dx - dy) / 2)
    signed_distance = {
        "circle": d - r,
        "triangle": sides - r / 2,
        "ring": torch.maximum(d - r, RING_INNER * r - d),
    }
    coverage = {name: (0.5 - sd).clamp(0, 1) for name, sd in signed_distance.items()}
    coverage["square"] = (r + 0.5 - dx.abs()).clamp(0, 1) * (r + 0.5 - dy.abs()).clamp(0, 1)
    out = torch.zeros_like(d)
    for index, name in enumerate(KINDS):
        out = torch.where((kind == index).view(-1, 1, 1, 1), coverage[name], out)
    return out * (r > 0)
