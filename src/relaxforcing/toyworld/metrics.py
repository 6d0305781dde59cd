"""World-truth metrics of a toy-world video: persistence, shape, tracks, physics, colour, motion, freezing,
background."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from relaxforcing.toyworld.render import Tracks, shape_coverage
from relaxforcing.toyworld.scene import FPS, FRAME_SIZE, KINDS, OBJECT_COLORS, SIZES, Scene, shape_area
from relaxforcing.toyworld.world import SPEED_RANGE, World, reflect_into, scene_of

DETECT_TOLERANCE_DE76 = 40.0
"""Largest ΔE76 between a pixel and an object colour for the pixel to count (colours are >= 39 apart)."""
MIN_VISIBLE_FRACTION = 0.25
"""An object is detected in a frame when at least this fraction of its area (and 3 pixels) is found."""
EXPECTED_VISIBLE_FRACTION = 0.5
"""With ground-truth tracks, an object must be detected only in frames where it is at least this visible."""
OCCLUSION_SECONDS = 1.0
"""Without tracks, an object unseen for up to this long next to a later-drawn object counts as hidden, not gone."""
VANISH_SECONDS = 0.25
"""First vanish: the start of the first run of at least this long in which an object is not present."""
FREEZE_WINDOW_SECONDS = 0.25
"""Freeze windows: one latent frame (4 video frames at 16 fps)."""
FREEZE_RATIO = 0.2
"""A window is frozen for an object when its speed there is below this fraction of the true speed."""
EDGE_FRACTION = 0.15
"""Early and late segments are the first and last 15% of the analysed frames (FramePack drift convention)."""
MIN_SHAPE_IOU = 0.7
"""A detected object is classified as the world shape whose rendering fits it best (IoU, see ``analyze``) only when
that fit reaches this; below it the object is no world shape. Measured: a lone rendered shape fits its own at 0.93
or more and other world shapes at 0.86 at most (circle/square); after the toy codec's round trip 95% of triangles and
rings still fit theirs at 0.73 and 0.77 or more (circles and squares 0.89); a 1.5:1 ellipse fits a circle at 0.76,
a 2:1 ellipse every shape under 0.65."""


@dataclass(frozen=True)
class WorldAnalysis:
    """Per-frame measurements of a video against its scene; ``[T, N]`` arrays follow the scene's draw order.

    Undefined entries are NaN (not detected, occluded, or no ground truth).
    """

    fps: float
    detected: np.ndarray
    """``[T, N]`` bool: enough pixels of the object's colour."""
    present: np.ndarray
    """``[T, N]`` bool: detected, or plausibly hidden (not expected visible by the tracks, or behind an object)."""
    shape_iou: np.ndarray
    """``[T, N, len(KINDS)]`` IoU of the object's shape (its coverage cut at half peak) with each world shape
    rendered at its centroid and area; NaN unless detected (with some coverage), fully visible (by the tracks, if
    any) and well apart from the other objects."""
    shape_correct: np.ndarray
    """``[T, N]`` 1 where the best fit of ``shape_iou`` is the named shape and reaches ``MIN_SHAPE_IOU``, else 0;
    NaN where ``shape_iou`` is."""
    center: np.ndarray
    """``[T, N, 2]`` detected centroid (x, y) in pixels where detected and clear of other objects."""
    color_error: np.ndarray
    """``[T, N]`` ΔE2000 of the mean colour of the object's pixels vs its named colour."""
    lab: np.ndarray
    """``[T, N, 3]`` mean CIE Lab colour of the object's pixels."""
    speed: np.ndarray
    """``[T, N]`` detected step speed from frame t-1 to t, pixels per frame."""
    true_speed: np.ndarray
    """``[T, N]`` reference step speed: from the tracks, else the middle of ``SPEED_RANGE``."""
    physics_error: np.ndarray
    """``[T, N]`` pixels between the centroid at t and the bounce-model prediction from frames t-4..t-1."""
    track_error: np.ndarray
    """``[T, N]`` pixels between the centroid and the ground-truth centre (all NaN without tracks)."""
    background_error: np.ndarray
    """``[T]`` mean ΔE76 of background pixels (2 pixels clear of object colours) vs the true background."""

    @property
    def num_frames(self) -> int:
        return self.detected.shape[0]

    def summary(self, until_seconds: float | None = None) -> dict[str, float]:
        """Metrics over ``[0, until_seconds)`` (default: the whole video); see ``world_metrics``."""
        stop = self.num_frames if until_seconds is None else min(self.num_frames, round(until_seconds * self.fps))
        if stop < 2:
            raise ValueError(f"until_seconds={until_seconds} leaves {stop} frames; at least 2 are needed")
        edge = max(2, round(EDGE_FRACTION * stop))
        out = self._segment(0, stop)
        early, late = self._segment(0, edge), self._segment(stop - edge, stop)
        early_lab, late_lab = (_nanmean(self.lab[s], axis=0) for s in (slice(0, edge), slice(stop - edge, stop)))
        per_object = self.present[:stop].mean(0)
        out |= {
            "seconds": stop / self.fps,
            "persistence_min": float(per_object.min()),
            "first_vanish_s": self._first_vanish(stop),
            "color_error_early_de00": early["color_error_de00"],
            "color_error_late_de00": late["color_error_de00"],
            "color_drift_de00": _nanmean(delta_e2000(early_lab, late_lab)),
            "motion_retention_early": early["motion_retention"],
            "motion_retention_late": late["motion_retention"],
            "background_error_early_de76": early["background_error_de76"],
            "background_error_late_de76": late["background_error_de76"],
        }
        return out

    def curves(self, window_seconds: float = 1.0) -> dict[str, np.ndarray]:
        """Per-window metrics over consecutive windows; ``time_s`` holds each window's end."""
        size = round(window_seconds * self.fps)
        if size < 2:
            raise ValueError(f"window_seconds={window_seconds} is under 2 frames at {self.fps} fps")
        rows = [self._segment(a, min(a + size, self.num_frames)) for a in range(0, self.num_frames - 1, size)]
        out = {key: np.array([row[key] for row in rows]) for key in rows[0]}
        out["time_s"] = np.minimum(np.arange(1, len(rows) + 1) * size, self.num_frames) / self.fps
        return out

    def _segment(self, start: int, stop: int) -> dict[str, float]:
        s = slice(start, stop)
        speed, true = self.speed[s], self.true_speed[s]
        moving = ~np.isnan(speed)
        return {
            "persistence": float(self.present[s].mean()),
            "persistence_all": float(self.present[s].all(1).mean()),
            "shape_accuracy": _nanmean(_nanmean(self.shape_correct[s], axis=0)),  # per object, then over objects
            "track_error_px": _nanmean(self.track_error[s]),
            "physics_error_px": _nanmean(self.physics_error[s]),
            "color_error_de00": _nanmean(self.color_error[s]),
            "speed_px_s": _nanmean(speed) * self.fps,
            "motion_retention": _ratio(speed[moving].sum(), true[moving].sum()),
            "freeze_rate": self._freeze_rate(start, stop),
            "background_error_de76": _nanmean(self.background_error[s]),
        }

    def _freeze_rate(self, start: int, stop: int) -> float:
        size = round(FREEZE_WINDOW_SECONDS * self.fps)
        first = -(-start // size) * size
        count = (stop - first) // size
        if count < 1:
            return math.nan
        window = slice(first, first + count * size)
        n = self.speed.shape[1]
        # Steps inside each window only (the step into its first frame belongs to the window before).
        speed = self.speed[window].reshape(count, size, n)[:, 1:]
        true = self.true_speed[window].reshape(count, size, n)[:, 1:]
        valid = (~np.isnan(speed)).sum(1) >= 2  # [windows, N]
        frozen = np.nansum(speed, 1) < FREEZE_RATIO * np.where(np.isnan(speed), 0, true).sum(1)
        return _ratio(float(frozen[valid].sum()), float(valid.sum()))

    def _first_vanish(self, stop: int) -> float:
        run = round(VANISH_SECONDS * self.fps)
        if stop < run:
            return math.inf
        gone = ~self.present[:stop]  # [T, N]
        windows = np.lib.stride_tricks.sliding_window_view(gone, run, axis=0).all(-1)  # [T - run + 1, N]
        hits = np.flatnonzero(windows.any(1))
        return float(hits[0] / self.fps) if hits.size else math.inf


SceneSpec = Scene | World | str | Mapping[str, object]
"""What should be in the video: a scene, a world (only its scene is read), a caption, or ``{"caption": ...}``."""


def analyze(
    video: np.ndarray | torch.Tensor, scene: SceneSpec, tracks: Tracks | None = None, fps: float = FPS
) -> WorldAnalysis:
    """Measure a uint8 video ``[T, H, W, 3]`` against the scene it should show and, if given, the true tracks.

    Objects are found by colour: a pixel belongs to an object when the object's colour is the nearest (CIE Lab
    ΔE76) of the scene's object colours and background tones, within ``DETECT_TOLERANCE_DE76``, and at least 3 of
    its 8 neighbours agree (this drops specks and the 1-pixel lines where anti-aliased edges blend into another
    colour). Centroids weight each pixel by its estimated coverage (where it lies between the true background and
    the object colour), which keeps them sub-pixel exact on anti-aliased video; colours are averaged over the
    object's interior pixels. Colour errors are ΔE2000, background errors ΔE76.

    Shapes are classified by geometry against the world's renderer: an object's shape (its coverage map around
    the largest 8-connected piece of its pixels, so stray edge pixels of another colour's outline are not part of
    it, cut at half its peak) is compared (IoU) with each world shape that the renderer draws at its centroid with
    the same area, cut at half coverage (the world never rotates shapes). Only frames where the object is whole and
    unambiguous count: detected, fully visible by the tracks if given, and every other object's centre (true
    centres with tracks, detected ones without) farther than ``sqrt(2)`` times the two half-extents plus a pixel,
    so no neighbour or occluder of any world shape can touch it.

    Videos upscaled by an integer factor (``H = W = 64 s``) are area-downsampled first. Object sizes the scene
    leaves open (None) are inferred from the detected areas. Positions and velocities of a ``World`` are not
    used: motion truth comes only from ``tracks``.
    """
    scene = scene_of(scene)
    video = _check_video(video)
    t, n = video.shape[0], len(scene.looks)
    rgb = np.moveaxis(video, -1, 0).astype(np.float32)  # [3, T, H, W]
    lab = np.ascontiguousarray(np.moveaxis(_to_lab(video), -1, 0))  # [3, T, H, W]
    background = scene.background.image()  # [H, W, 3]
    object_rgb = np.array([OBJECT_COLORS[look.color] for look in scene.looks], dtype=np.uint8)  # [N, 3]
    object_lab = _to_lab(object_rgb)

    # 1. Segmentation: hard colour labels, then soft coverage for centroids, interior pixels for colour.
    tones = _to_lab(np.unique(background.reshape(-1, 3), axis=0))
    raw, hard = _label(lab, np.concatenate([object_lab, tones]), n)  # [N, T, H, W] bool
    weight = _coverage(rgb, hard, object_rgb, background)  # [N, T, H, W]
    seen_area = weight.reshape(n, t, -1).sum(-1).T  # [T, N]
    radii = np.array([_radius(look.kind, look.size, seen_area[:, k]) for k, look in enumerate(scene.looks)])
    areas = np.array([shape_area(look.kind, r) for look, r in zip(scene.looks, radii, strict=True)])
    detected = seen_area >= np.maximum(3, MIN_VISIBLE_FRACTION * areas)
    centroid = _weighted_mean(weight, _pixel_xy(), detected)  # [T, N, 2]
    interior = hard & (_box3(hard) == 9)
    has_interior = interior.reshape(n, t, -1).any(-1)[..., None, None]
    use = np.where(has_interior, interior, hard).astype(np.float32)
    mean_lab = _weighted_mean(use, lab.reshape(3, 1, t, -1), detected)  # [T, N, 3]
    color_error = delta_e2000(mean_lab, object_lab[None])

    # 2. Presence, and frames whose centroid is trustworthy (no other object within touching distance).
    gap = np.linalg.norm(centroid[:, :, None] - centroid[:, None], axis=-1)  # [T, N, N]
    touching = (gap <= radii[:, None] + radii[None]) & ~np.eye(n, dtype=bool)
    clear = detected & ~touching.any(2)
    gt_center = None
    if tracks is not None:
        gt_center, gt_visible = (
            np.asarray(x.detach().cpu(), dtype=np.float64) for x in (tracks.center, tracks.visibility)
        )
        if gt_center.shape != (t, n, 2):
            raise ValueError(f"tracks.center has shape {gt_center.shape}, expected {(t, n, 2)} for this video")
        present = detected | (gt_visible < EXPECTED_VISIBLE_FRACTION)
        clear &= gt_visible >= 0.999
        whole = detected & (gt_visible >= 0.999) & _apart(gt_center, radii)
    else:
        present = detected | _hidden_behind(detected, centroid, radii, round(OCCLUSION_SECONDS * fps))
        whole = detected & _apart(centroid, radii)
    center = np.where(clear[..., None], centroid, np.nan)
    shape_iou = _shape_iou(weight, hard, whole)
    named = np.array([KINDS.index(look.kind) for look in scene.looks])
    fit = np.nan_to_num(shape_iou, nan=-1.0)
    shape_correct = np.where(fit[..., 0] >= 0, (fit.argmax(-1) == named) & (fit.max(-1) >= MIN_SHAPE_IOU), np.nan)

    # 3. Motion: step speeds, reference speeds, bounce-model prediction.
    speed = np.full((t, n), np.nan)
    speed[1:] = np.linalg.norm(np.diff(center, axis=0), axis=-1)
    if gt_center is None:
        true_speed = np.full((t, n), float(np.mean(SPEED_RANGE)))
        track_error = np.full((t, n), np.nan)
    else:
        true_speed = np.full((t, n), np.nan)
        true_speed[1:] = np.linalg.norm(np.diff(gt_center, axis=0), axis=-1)
        track_error = np.linalg.norm(center - gt_center, axis=-1)

    return WorldAnalysis(
        fps=fps,
        detected=detected,
        present=present,
        shape_iou=shape_iou,
        shape_correct=shape_correct,
        center=center,
        color_error=color_error,
        lab=mean_lab,
        speed=speed,
        true_speed=true_speed,
        physics_error=_bounce_prediction_error(center, radii),
        track_error=track_error,
        background_error=_background_error(lab, raw.any(0), background),
    )


def world_metrics(
    video: np.ndarray | torch.Tensor,
    scene: SceneSpec,
    tracks: Tracks | None = None,
    fps: float = FPS,
    until_seconds: float | None = None,
) -> dict[str, float]:
    """World-truth metrics of a uint8 video ``[T, H, W, 3]`` over ``[0, until_seconds)``; see ``analyze``.

    Keys (per object values averaged over objects; NaN where undefined):
        persistence: fraction of frames an object is present (detected, or plausibly hidden by occlusion).
        persistence_all / persistence_min: fraction of frames all objects are present / the worst object's value.
        shape_accuracy: fraction of an object's measurable frames (whole, unoccluded, apart from the others) in
            which its detected mask is classified as its named shape (see ``analyze``), averaged over the objects
            that have such frames (NaN if none; an object never drawn counts in persistence, not here).
        first_vanish_s: start of the first >= 0.25 s absence of any object, in seconds (inf: never).
        track_error_px: centroid distance to the ground-truth centre (needs ``tracks``).
        physics_error_px: one-step prediction error of a constant-speed, wall-bounce model fitted to the
            detected track over the 4 frames before (under 0.1 on ground truth).
        color_error_de00, _early_, _late_: ΔE2000 of object colour vs its named colour, all / first / last 15%.
        color_drift_de00: ΔE2000 between an object's mean colour in the first and in the last 15%.
        speed_px_s: mean detected object speed.
        motion_retention, _early, _late: detected / true distance travelled (true: from ``tracks``, else the
            middle of ``SPEED_RANGE``), all / first / last 15%.
        freeze_rate: fraction of (0.25 s window, object) pairs where the object moves under 20% of the true
            speed (from ``tracks``, else the middle of ``SPEED_RANGE``).
        background_error_de76, _early_, _late_: mean ΔE76 of background pixels vs the true background.
        seconds: the duration analysed.
    """
    return analyze(video, scene, tracks, fps).summary(until_seconds)


def world_metric_curves(
    video: np.ndarray | torch.Tensor,
    scene: SceneSpec,
    tracks: Tracks | None = None,
    fps: float = FPS,
    window_seconds: float = 1.0,
) -> dict[str, np.ndarray]:
    """The per-frame-range metrics of ``world_metrics`` on consecutive windows, plus ``time_s`` (window ends)."""
    return analyze(video, scene, tracks, fps).curves(window_seconds)


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIE Lab colours ``[..., 3]`` (broadcast), ``[...]``."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    chroma = c1 * c2 != 0
    dh = h2 - h1
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)) * chroma
    d_hue = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh / 2))
    l_bar, c_bar = (l1 + l2) / 2, (c1 + c2) / 2
    h_sum = h1 + h2
    h_bar = np.where(np.abs(h1 - h2) <= 180, h_sum / 2, np.where(h_sum < 360, h_sum + 360, h_sum - 360) / 2)
    h_bar = np.where(chroma, h_bar, h_sum)
    tt = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    turn = np.radians(60 * np.exp(-(((h_bar - 275) / 25) ** 2)))  # 2 delta-theta
    rotation = -2 * np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)) * np.sin(turn)
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_bar, 1 + 0.015 * c_bar * tt
    dl, dc, dh_ = (l2 - l1) / s_l, (c2 - c1) / s_c, d_hue / s_h
    return np.sqrt(np.maximum(dl**2 + dc**2 + dh_**2 + rotation * dc * dh_, 0))


def _background_error(lab: np.ndarray, object_colored: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Mean ΔE76 ``[T]`` between ``lab`` (``[3, T, H, W]``) and the true background, over pixels with no
    object colour within 2 pixels (``object_colored``: ``[T, H, W]``); NaN where none is left."""
    t = lab.shape[1]
    keep = _box3(_box3(object_colored) > 0) == 0  # [T, H, W]
    true_lab = np.moveaxis(_to_lab(background), -1, 0)[:, None]  # [3, 1, H, W]
    delta = np.sqrt(sum((lab[c] - true_lab[c]) ** 2 for c in range(3)))  # [T, H, W]
    kept = keep.reshape(t, -1).sum(-1)
    return np.where(kept > 0, (delta * keep).reshape(t, -1).sum(-1) / np.maximum(kept, 1), np.nan)


def _label(lab: np.ndarray, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of each object ``[N, T, H, W]``: its colour is the nearest candidate (the ``n`` object colours, then
    the background tones; ``[K, 3]`` Lab) within tolerance; raw, and without specks and 1-pixel lines (pixels
    with fewer than 3 same-object neighbours, e.g. anti-aliased edges that blend to another object's colour)."""
    best = np.full(lab.shape[1:], np.inf, dtype=np.float32)  # [T, H, W]
    nearest = np.zeros(lab.shape[1:], dtype=np.int8)
    for k, c in enumerate(candidates):
        d2 = (lab[0] - c[0]) ** 2 + (lab[1] - c[1]) ** 2 + (lab[2] - c[2]) ** 2
        closer = d2 < best
        best = np.where(closer, d2, best)
        nearest[closer] = k
    nearest[best > DETECT_TOLERANCE_DE76**2] = -1
    raw = np.stack([nearest == k for k in range(n)])
    return raw, raw & (_box3(raw) >= 4)


def _coverage(rgb: np.ndarray, hard: np.ndarray, object_rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Estimated coverage ``[N, T, H, W]`` of each object: where a pixel of ``rgb`` (``[3, T, H, W]``) sits between
    the true background and the object colour, counted on the object's pixels and the unclaimed ones around them."""
    bg = np.moveaxis(background, -1, 0).astype(np.float32)[:, None]  # [3, 1, H, W]
    offset = rgb - bg  # [3, T, H, W]
    free = ~hard.any(0)
    out = np.empty(hard.shape, dtype=np.float32)
    for k, color in enumerate(object_rgb.astype(np.float32)):
        toward = color[:, None, None, None] - bg  # [3, 1, H, W]
        alpha = (offset[0] * toward[0] + offset[1] * toward[1] + offset[2] * toward[2]) / (toward**2).sum(0)
        around = (_box3(hard[k]) > 0) & (hard[k] | free)
        out[k] = np.clip(alpha, 0, 1) * around
    return out


def _weighted_mean(weight: np.ndarray, values: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Weighted mean ``[T, N, C]`` of value planes ``values`` (``[C, 1, 1, P]`` or ``[C, 1, T, P]``) under
    ``weight`` ``[N, T, H, W]``; NaN where not detected."""
    n, t = weight.shape[:2]
    w = weight.reshape(1, n, t, -1)  # [1, N, T, P]
    mean = (w * values).sum(-1) / np.maximum(w.sum(-1), 1e-6)  # [C, N, T]
    return np.where(detected.T[None], mean, np.nan).transpose(2, 1, 0)


def _pixel_xy() -> np.ndarray:
    """Pixel-centre planes ``(x, y)``, ``[2, 1, 1, H * W]``."""
    centre = np.arange(FRAME_SIZE, dtype=np.float32) + 0.5
    return np.stack(np.meshgrid(centre, centre, indexing="xy")).reshape(2, 1, 1, -1)


def _apart(center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """``[T, N]`` bool: no other object's centre (``[T, N, 2]``, NaN: unknown) is within ``sqrt(2)`` times the two
    half-extents plus a pixel, where two world shapes of any kind could touch."""
    n = len(radii)
    gap = np.linalg.norm(center[:, :, None] - center[:, None], axis=-1)  # [T, N, N]
    near = (gap <= math.sqrt(2) * (radii[:, None] + radii[None]) + 1) & ~np.eye(n, dtype=bool)
    return ~near.any(2)


def _shape_iou(weight: np.ndarray, hard: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """IoU ``[T, N, len(KINDS)]`` of each object's shape with every world shape as the world's renderer draws it at
    the same centroid and area; NaN where not ``measured`` (``[T, N]``) or nothing is covered.

    An object's shape is its coverage map (``weight``, ``[N, T, H, W]``) within a pixel of the largest 8-connected
    piece of its pixels (``hard``), cut at half its peak; rendered shapes are cut at half coverage. Cutting both
    keeps blur from making every shape fit equally well: a blurred disc stays a disc.
    """
    out = np.full((*measured.shape, len(KINDS)), np.nan)
    count = int(measured.sum())
    for pairs in np.array_split(np.argwhere(measured), -(-count // 512)) if count else []:  # [P, 2] (t, n)
        seen = np.zeros((len(pairs), FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
        for i, (t, k) in enumerate(pairs):
            _, labels, stats, _ = cv2.connectedComponentsWithStats(hard[k, t].astype(np.uint8), connectivity=8)
            if len(stats) > 1:
                seen[i] = weight[k, t] * (_box3(labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())) > 0)
        mass = seen.reshape(len(pairs), -1).sum(-1)
        pairs, seen, mass = pairs[mass > 0], seen[mass > 0], mass[mass > 0]
        if not len(pairs):
            continue
        xy = (seen.reshape(len(pairs), 1, -1) * _pixel_xy().reshape(1, 2, -1)).sum(-1) / mass[:, None]  # [P, 2]
        shape = seen >= 0.5 * seen.max((1, 2), keepdims=True)  # [P, H, W]
        area = shape.reshape(len(pairs), -1).sum(-1)  # [P]
        # Compare in a window around each centroid that holds every shape of that area (a triangle's apex, at its
        # circumradius, reaches farthest); the world's shapes never leave the frame, so none is cut at its edge.
        half = math.ceil(math.sqrt(area.max() / shape_area("triangle", 1.0))) + 2
        corner = np.floor(xy).astype(np.int64) - half  # [P, 2] window origin (x, y) in frame pixels
        span = np.arange(2 * half + 1)
        cols, rows = (corner[:, i, None] + half + span for i in (0, 1))  # in the frame padded by ``half``
        padded = np.pad(shape, [(0, 0), (half, half), (half, half)])
        mine = padded[np.arange(len(pairs))[:, None, None], rows[:, :, None], cols[:, None, :]][:, None]  # [P,1,S,S]
        offset = torch.from_numpy(corner[..., None] + span + 0.5 - xy[..., None]).float()  # [P, 2, S] from centroid
        dx, dy = offset[:, 0, None, None, :], offset[:, 1, None, :, None]  # [P, 1, 1, S], [P, 1, S, 1]
        drawn = torch.cat([
            shape_coverage(dx, dy, torch.full((len(pairs),), index),
                            torch.from_numpy(np.sqrt(area / shape_area(kind, 1.0))).float())
            for index, kind in enumerate(KINDS)
        ], 1).numpy() >= 0.5  # [P, K, S, S]
        out[pairs[:, 0], pairs[:, 1]] = (mine & drawn).sum((-2, -1)) / (mine | drawn).sum((-2, -1))
    return out


def _bounce_prediction_error(center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Distance ``[T, N]`` from ``center[t]`` to the prediction from ``center[t-4 : t]`` (NaN if any is missing).

    Per axis: speed = median of the last 3 step lengths (a step shortened by a bounce is outvoted), direction =
    sign of the last step (right after a bounce too), then fold into the walls ``[r, FRAME_SIZE - r]``.
    """
    t, n, _ = center.shape
    out = np.full((t, n), np.nan)
    if t < 5:
        return out
    step = np.diff(center, axis=0)  # [T-1, N, 2], step[s] = center[s+1] - center[s]
    pace = np.median(np.abs(np.stack([step[:-3], step[1:-2], step[2:-1]])), axis=0)  # [T-4, N, 2]
    r = radii[None, :, None]
    guess = reflect_into(center[3:-1] + np.sign(step[2:-1]) * pace, r, FRAME_SIZE - r)
    out[4:] = np.linalg.norm(guess - center[4:], axis=-1)
    return out


def _hidden_behind(detected: np.ndarray, centroid: np.ndarray, radii: np.ndarray, max_frames: int) -> np.ndarray:
    """``[T, N]`` bool: undetected, seen at most ``max_frames`` ago, and a later-drawn object is detected within
    reach of where it was last seen (touching distance plus the top speed times the time since)."""
    t, n = detected.shape
    frames = np.arange(t)[:, None]
    last = np.maximum.accumulate(np.where(detected, frames, -1), axis=0)  # [T, N]
    seen = last >= 0
    last_xy = centroid[np.maximum(last, 0), np.arange(n)]  # [T, N, 2]
    since = frames - last
    hidden = np.zeros((t, n), dtype=bool)
    for k in range(n):
        for j in range(k + 1, n):
            reach = radii[k] + radii[j] + SPEED_RANGE[1] * since[:, k]
            near = np.linalg.norm(centroid[:, j] - last_xy[:, k], axis=-1) <= reach
            hidden[:, k] |= detected[:, j] & near
    return hidden & ~detected & seen & (since <= max_frames)


def _radius(kind: str, size: str | None, counts: np.ndarray) -> float:
    """The size's half-extent, or the size whose area is nearest (in ratio) to the median detected area."""
    if size is not None:
        return SIZES[size]
    seen = counts[counts > 0]
    if seen.size == 0:
        return min(SIZES.values())
    area = float(np.median(seen))
    return min(SIZES.values(), key=lambda r: abs(math.log(area / shape_area(kind, r))))


def _box3(masks: np.ndarray) -> np.ndarray:
    """3x3 neighbourhood counts of boolean masks ``[..., H, W]`` (zero padding)."""
    padded = np.pad(masks.astype(np.uint8), [(0, 0)] * (masks.ndim - 2) + [(1, 1), (1, 1)])
    h, w = masks.shape[-2:]
    return sum(padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3))


def _to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``[..., 3]`` to CIE Lab (D65) float32 of the same shape."""
    width = rgb.shape[-2] if rgb.ndim >= 3 else 1
    flat = rgb.reshape(-1, width, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape)


def _check_video(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 ``[T, 64, 64, 3]``, area-downsampled from ``[T, 64 s, 64 s, 3]``."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    t, h, w = video.shape[:3] if video.ndim == 4 else (0, 0, 0)
    if video.dtype != np.uint8 or video.shape[-1:] != (3,) or h != w or h == 0 or h % FRAME_SIZE:
        raise ValueError(
            f"expected a uint8 video [T, {FRAME_SIZE} s, {FRAME_SIZE} s, 3] (s = 1, 2, ...), "
            f"got {video.dtype} {tuple(video.shape)}"
        )
    if h == FRAME_SIZE:
        return video
    small = (FRAME_SIZE, FRAME_SIZE)
    return np.stack([cv2.resize(frame, small, interpolation=cv2.INTER_AREA) for frame in video])


def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    finite = ~np.isnan(x)
    total = np.where(finite, x, 0).sum(axis)
    count = finite.sum(axis)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if axis is None else mean


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan
