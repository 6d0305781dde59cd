"""Backends that run VBench's own models from user-supplied local weights, with VBench's preprocessing.

Nothing here downloads. Two formats are accepted:
- Hugging Face model directories (``config.json`` + weights), loaded by ``transformers`` with
  ``local_files_only=True``: DINO ViT-B/16 (``facebook/dino-vitb16``), CLIP ViT-B/32 and ViT-L/14 vision towers
  (``openai/clip-vit-base-patch32``, ``openai/clip-vit-large-patch14``).
- Program files for models with no architecture in an installed package: ``torch.export.save`` output (``.pt2``,
  valid for the shapes it was exported with) or TorchScript (``torch.jit.save``, any other suffix), each with a
  fixed call contract: RAFT-things (``module(img1, img2) -> flow [1, 2, H, W]`` or a tuple ending in it, 20 iterations
  baked in, inputs RGB 0-255 replicate-padded to multiples of 8), AMT-S (``module(img0, img1, embt) -> [1, 3, H, W]``
  in 0-1, inputs 0-1 replicate-padded to multiples of 16, ``embt = 0.5``), and MUSIQ-SPAQ
  (``module(img [1, 3, h, w] in 0-1) -> score`` on the 0-100 scale).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from relaxforcing.evaluation.features import FeatureFn
from relaxforcing.evaluation.flow import FlowFn, InterpolateFn

FrameScoreFn = Callable[[np.ndarray], np.ndarray]
"""``frames [T, H, W, 3] uint8 RGB -> per-frame scores [T]`` on the dimension's 0-1 scale."""

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
BATCH = 16


def _tensor(frames: np.ndarray) -> torch.Tensor:
    """``[T, H, W, 3]`` uint8 → ``[T, 3, H, W]`` float32 on the 0-255 scale."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def _normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _resize_shorter(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """torchvision ``Resize(size)``: shorter side to ``size``, longer side ``int(size * long / short)``."""
    h, w = x.shape[-2:]
    out = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return F.interpolate(x, size=out, mode=mode, align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def _pad(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, list[int]]:
    """RAFT/AMT ``InputPadder``: replicate-pad H and W up to multiples of ``divisor``, split evenly."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    pad = [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]
    return F.pad(x, pad, mode="replicate"), pad


def _batched(frames: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([fn(_tensor(frames[i : i + BATCH])) for i in range(0, len(frames), BATCH)]).numpy()


def _transformers_model(kind: str, path: Path) -> torch.nn.Module:
    try:
        import transformers
    except ImportError as err:
        raise ValueError(f"weights at {path} need the optional 'transformers' package (relaxforcing[real])") from err
    return getattr(transformers, kind).from_pretrained(str(path), local_files_only=True).eval()


def dino_features(path: Path) -> FeatureFn:
    """DINO ViT-B/16 CLS features with VBench's ``dino_transform(224)``.

    As shipped, VBench resizes the shorter side to 224 and applies ImageNet mean/std to 0-255 values (no /255);
    that quirk is reproduced so scores match the official ones.
    """
    model = _transformers_model("ViTModel", path)

    def features(x: torch.Tensor) -> torch.Tensor:
        x = _normalise(_resize_shorter(x, 224, "bilinear"), IMAGENET_MEAN, IMAGENET_STD)
        return model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state[:, 0]

    return lambda frames: _batched(frames, features)


def _clip_embeds(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """VBench's ``clip_transform(224)`` (bicubic shorter side 224, centre crop, /255, CLIP mean/std) + image embeds."""
    x = _normalise(_center_crop(_resize_shorter(x, 224, "bicubic"), 224) / 255.0, CLIP_MEAN, CLIP_STD)
    return model(pixel_values=x).image_embeds


def clip_features(path: Path) -> FeatureFn:
    """CLIP image embeddings (ViT-B/32 for background consistency)."""
    model = _transformers_model("CLIPVisionModelWithProjection", path)
    return lambda frames: _batched(frames, lambda x: _clip_embeds(model, x))


def laion_aesthetic(clip_path: Path, head_path: Path) -> FrameScoreFn:
    """LAION aesthetic score / 10: ``Linear(768, 1)`` on L2-normalised CLIP ViT-L/14 image embeddings."""
    model = _transformers_model("CLIPVisionModelWithProjection", clip_path)
    head = torch.nn.Linear(768, 1)
    head.load_state_dict(torch.load(head_path, map_location="cpu", weights_only=True))

    def score(x: torch.Tensor) -> torch.Tensor:
        return head(F.normalize(_clip_embeds(model, x).float(), dim=-1))[:, 0] / 10.0

    return lambda frames: _batched(frames, score)


def _program(path: Path) -> Callable[..., object]:
    """A ``torch.export.save`` file (``.pt2``; shapes as exported) or else a ``torch.jit.save`` file."""
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path), map_location="cpu").eval()


def musiq_quality(path: Path) -> FrameScoreFn:
    """MUSIQ-SPAQ per frame with VBench's ``longer`` preprocessing (longer side > 512 → 512, bilinear), / 100."""
    model = _program(path)

    def score(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if max(h, w) > 512:
            scale = 512.0 / max(h, w)
            x = F.interpolate(x, size=(int(scale * h), int(scale * w)), mode="bilinear", align_corners=False)
        return torch.stack([model(frame[None] / 255.0).reshape(()) for frame in x]) / 100.0

    return lambda frames: _batched(frames, score)


def raft_flow(path: Path) -> FlowFn:
    """RAFT flow on padded 0-255 RGB; the flow stays padded because VBench takes its top 5% over the padded frame."""
    model = _program(path)

    def flow(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pair, _ = _pad(_tensor(np.stack([frame0, frame1])), 8)
            out = model(pair[:1], pair[1:])
            out = out[-1] if isinstance(out, tuple | list) else out
            return out[0].permute(1, 2, 0).numpy()

    return flow


def amt_interpolator(path: Path) -> InterpolateFn:
    """AMT midpoint (t = 1/2) on replicate-padded 0-1 RGB, unpadded and converted with AMT's ``tensor2img``."""
    model = _program(path)
    embt = torch.full((1, 1, 1, 1), 0.5)

    def interpolate(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pair, (left, right, top, bottom) = _pad(_tensor(np.stack([frame0, frame1])) / 255.0, 16)
            out = model(pair[:1], pair[1:], embt)
            h, w = out.shape[-2:]
            out = out[0, :, top : h - bottom, left : w - right]
            return (out * 255.0).permute(1, 2, 0).numpy().clip(0, 255).astype(np.uint8)

    return interpolate
