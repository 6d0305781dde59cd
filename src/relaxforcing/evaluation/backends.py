"""Registry of evaluation backends: which model computes each VBench dimension, and whether it needs weights.

A metric is named ``dimension[backend]``. Weight-free backends always run; weight backends run only when every
key they list is in the user's ``weights`` mapping (local paths, never downloaded) and are otherwise reported
as missing with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2

from relaxforcing.evaluation import weighted
from relaxforcing.evaluation.features import grad_features, salient_hist, surround_hist
from relaxforcing.evaluation.flow import dis_flow, farneback_flow, flow_interpolator

FLOW_DIMENSIONS = ("dynamic_degree",)
INTERPOLATOR_DIMENSIONS = ("motion_smoothness",)
FEATURE_DIMENSIONS = ("subject_consistency", "background_consistency")
FRAME_SCORE_DIMENSIONS = ("aesthetic_quality", "imaging_quality")
DIMENSIONS = FLOW_DIMENSIONS + INTERPOLATOR_DIMENSIONS + FEATURE_DIMENSIONS + FRAME_SCORE_DIMENSIONS

WEIGHT_KEYS = {
    "raft": "TorchScript or torch.export program of RAFT-things (raft-things.pth), 20 iterations",
    "amt": "TorchScript or torch.export program of AMT-S (amt-s.pth)",
    "dino": "Hugging Face directory of DINO ViT-B/16 (facebook/dino-vitb16)",
    "clip_b32": "Hugging Face directory of CLIP ViT-B/32 (openai/clip-vit-base-patch32)",
    "clip_l14": "Hugging Face directory of CLIP ViT-L/14 (openai/clip-vit-large-patch14)",
    "laion_head": "LAION aesthetic head state dict (sa_0_4_vit_l_14_linear.pth)",
    "musiq": "TorchScript or torch.export program of MUSIQ-SPAQ (musiq_spaq_ckpt-358bb6af.pth)",
}
"""Keys of the ``weights`` mapping and what each local path must hold."""


@dataclass(frozen=True)
class Backend:
    """One way to compute one dimension."""

    dimension: str
    name: str
    weights: tuple[str, ...]
    """Keys of :data:`WEIGHT_KEYS` it needs; empty for weight-free backends."""
    official: bool
    """True iff this is the model VBench itself uses (then scores are comparable to published ones)."""
    description: str
    build: Callable[..., object]
    """Called with one ``Path`` per ``weights`` key; returns a FlowFn, InterpolateFn, FeatureFn or FrameScoreFn."""

    @property
    def metric(self) -> str:
        return metric_name(self.dimension, self.name)


@dataclass(frozen=True)
class ResolvedBackend:
    """A backend ready to run (``impl`` set) or reported missing (``missing`` says why)."""

    backend: Backend
    impl: object | None
    missing: str | None


def metric_name(dimension: str, backend: str) -> str:
    """``dynamic_degree`` + ``dis`` → ``dynamic_degree[dis]``."""
    return f"{dimension}[{backend}]"


_BACKENDS = [
    Backend("dynamic_degree", "dis", (), False, "OpenCV DIS flow (medium preset), full resolution",
            lambda: dis_flow(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)),
    Backend("dynamic_degree", "farneback", (), False, "OpenCV Farneback flow (tutorial parameters), full resolution",
            farneback_flow),
    Backend("dynamic_degree", "raft", ("raft",), True, "RAFT-things, 20 iterations", weighted.raft_flow),
    Backend("motion_smoothness", "flow", (), False, "DIS flow (fast preset) both ways, warped average at t = 1/2",
            lambda: flow_interpolator(dis_flow(cv2.DISOPTICAL_FLOW_PRESET_FAST))),
    Backend("motion_smoothness", "amt", ("amt",), True, "AMT-S frame interpolation", weighted.amt_interpolator),
    Backend("subject_consistency", "hist", (), False, "saliency-weighted HSV colour histograms",
            lambda: salient_hist),
    Backend("subject_consistency", "grad", (), False, "downsampled Sobel gradients (layout)", lambda: grad_features),
    Backend("subject_consistency", "dino", ("dino",), True, "DINO ViT-B/16 CLS features", weighted.dino_features),
    Backend("background_consistency", "hist", (), False, "(1 - saliency)^2-weighted HSV colour histograms",
            lambda: surround_hist),
    Backend("background_consistency", "grad", (), False, "downsampled Sobel gradients (layout)",
            lambda: grad_features),
    Backend("background_consistency", "clip", ("clip_b32",), True, "CLIP ViT-B/32 image embeddings",
            weighted.clip_features),
    Backend("aesthetic_quality", "laion", ("clip_l14", "laion_head"), True, "CLIP ViT-L/14 + LAION linear head",
            weighted.laion_aesthetic),
    Backend("imaging_quality", "musiq", ("musiq",), True, "MUSIQ trained on SPAQ", weighted.musiq_quality),
]
REGISTRY: dict[str, Backend] = {b.metric: b for b in _BACKENDS}
"""All backends by metric name."""

DEFAULT_BACKENDS: dict[str, tuple[str, ...]] = {
    "dynamic_degree": ("dis", "farneback", "raft"),
    "motion_smoothness": ("flow", "amt"),
    "subject_consistency": ("hist", "dino"),
    "background_consistency": ("hist", "clip"),
    "aesthetic_quality": ("laion",),
    "imaging_quality": ("musiq",),
}
"""What runs when the caller names nothing: the weight-free proxies and the official model (missing without
weights). ``dynamic_degree[farneback]`` is about half of the weight-free time; name the others to skip it."""


def _select(backends: Mapping[str, str | Sequence[str]] | None) -> list[Backend]:
    chosen = dict(DEFAULT_BACKENDS)
    for dimension, names in (backends or {}).items():
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}; known: {', '.join(DIMENSIONS)}")
        chosen[dimension] = (names,) if isinstance(names, str) else tuple(names)
    selected = []
    for dimension, names in chosen.items():
        for name in names:
            key = metric_name(dimension, name)
            if key not in REGISTRY:
                known = [b.name for b in _BACKENDS if b.dimension == dimension]
                raise ValueError(f"unknown backend {name!r} for {dimension}; known: {', '.join(known)}")
            selected.append(REGISTRY[key])
    return selected


def check_weights(weights: Mapping[str, Path] | None) -> dict[str, Path]:
    """Validates a ``weights`` mapping: known keys, existing local paths."""
    checked = {}
    for key, path in (weights or {}).items():
        if key not in WEIGHT_KEYS:
            raise ValueError(f"unknown weights key {key!r}; known: {', '.join(WEIGHT_KEYS)}")
        if not Path(path).exists():
            raise ValueError(f"weights[{key!r}] not found: {path}")
        checked[key] = Path(path)
    return checked


def resolve_backends(backends: Mapping[str, str | Sequence[str]] | None = None,
                     weights: Mapping[str, Path] | None = None) -> dict[str, ResolvedBackend]:
    """Builds the selected backends, keyed by metric name.

    Args:
        backends: dimension → backend name(s); listed dimensions replace :data:`DEFAULT_BACKENDS` entries (an
            empty list turns a dimension off), unlisted ones keep the defaults.
        weights: :data:`WEIGHT_KEYS` key → local path.

    Raises:
        ValueError: unknown dimension, backend or weights key, or a weights path that does not exist.
    """
    paths = check_weights(weights)
    resolved = {}
    for backend in _select(backends):
        absent = [key for key in backend.weights if key not in paths]
        if absent:
            wanted = "; ".join(f"weights[{key!r}] = {WEIGHT_KEYS[key]}" for key in absent)
            resolved[backend.metric] = ResolvedBackend(backend, None, f"needs local weights, not given: {wanted}")
        else:
            resolved[backend.metric] = ResolvedBackend(backend, backend.build(*(paths[k] for k in backend.weights)),
                                                       None)
    return resolved
