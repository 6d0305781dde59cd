"""`load_wan`: a real Self-Forcing-style checkpoint on the Wan2.1 stack (causal DiT + umT5 + Wan VAE) as a pipeline."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from relaxforcing.checkpoints import load_dit, read_checkpoint
from relaxforcing.checkpoints.dit_config import config_from_json
from relaxforcing.checkpoints.files import resolve_weights, tensors_only
from relaxforcing.codecs.wan_vae import WAN21_VAE_CONFIG, WanVAEDecoder, load_wan_vae
from relaxforcing.model.config import WanConfig
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.text.umt5 import WAN_T5_FILE, encode_prompts

__all__ = [
    "DEFAULT_SIZE",
    "SIZES",
    "PromptContexts",
    "WanFiles",
    "WanVideoPipeline",
    "default_text_cache",
    "load_wan",
    "wan_files",
]

SIZES: dict[str, tuple[int, int]] = {"832x480": (60, 104), "480x832": (104, 60)}
"""Supported ``WIDTHxHEIGHT`` (Wan's ``SUPPORTED_SIZES`` for 1.3B) -> latent ``(h, w)``; the VAE shrinks space by 8."""
DEFAULT_SIZE = "832x480"
"""Landscape 832 wide, 480 high: latents 60x104, 1560 DiT tokens per latent frame."""
FPS = 16
"""Frame rate of Wan2.1 and every Self-Forcing-family model."""
FRAMES_PER_LATENT = 4
"""VAE time stride: each latent after the first decodes to 4 frames, the first to 1."""
TEXT_DTYPE = torch.bfloat16
"""umT5 runs in bf16 as in Wan (its released weights are bf16); the prompt cache is keyed on it."""

WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_TOKENIZER_DIR = "google/umt5-xxl"


def default_text_cache() -> Path:
    """``$XDG_CACHE_HOME/relaxforcing/text`` (``~/.cache/relaxforcing/text``): prompt embeddings, one file each."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relaxforcing" / "text"


@dataclass(frozen=True)
class WanFiles:
    """The parts of a Wan2.1 model folder that the pipeline reads (the DiT comes from ``--checkpoint``)."""

    vae: Path
    """``Wan2.1_VAE.pth``, or a diffusers ``vae/`` folder."""
    text: tuple[Path, Path]
    """The umT5 source for :func:`relaxforcing.text.umt5.encode_prompts`: ``(weights, tokenizer folder)``."""
    config: Path | None
    """The DiT's ``config.json``, when the folder has one."""


def wan_files(wan_dir: str | Path) -> WanFiles:
    """Locate the VAE, umT5 and config of a Wan2.1 folder, original or diffusers layout.

    Original (``Wan-AI/Wan2.1-T2V-1.3B``): ``config.json``, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth``,
    ``google/umt5-xxl/``. Diffusers (``...-Diffusers``): ``model_index.json``, ``transformer/config.json``,
    ``vae/``, ``text_encoder/``, ``tokenizer/``.

    Raises:
        ValueError: the folder or one of the files it needs is missing (the message names the file).
    """
    root = Path(wan_dir)
    if not root.is_dir():
        raise ValueError(f"--wan-dir {root} is not a folder (expected a Wan2.1-T2V-1.3B download)")
    if (root / "model_index.json").is_file():
        vae, text = root / "vae", (root / "text_encoder", root / "tokenizer")
        needed = [vae / "config.json", text[0] / "config.json", text[1]]
        config = root / "transformer" / "config.json"
    else:
        vae, text = root / WAN_VAE_FILE, (root / WAN_T5_FILE, root / WAN_TOKENIZER_DIR)
        needed = [vae, *text]
        config = root / "config.json"
    for path in needed:
        if not path.exists():
            raise ValueError(f"{path} is missing from the Wan folder {root}")
    return WanFiles(vae=vae, text=text, config=config if config.is_file() else None)


class PromptContexts:
    """`VideoPipeline.encode_text` for umT5: prompts -> ``[B, text_len, text_dim]`` contexts.

    A prompt is encoded once (through the on-disk cache of
    :func:`~relaxforcing.text.umt5.encode_prompts`) and its context kept on the CPU (4 MiB in bf16 at Wan's
    512 x 4096). :meth:`prepare` encodes a whole prompt list with one encoder load; calling the object encodes
    whatever is missing the same way. Either way the encoder is freed before the call returns, so it is gone before
    the DiT runs (the DiT's weights are resident meanwhile: 2.6 GB for 1.3B in bf16, beside umT5-XXL's 11 GB).
    """

    def __init__(
        self,
        source: tuple[Path, Path],
        cache_dir: Path,
        text_len: int,
        text_dim: int,
        device: str | torch.device,
        dtype: torch.dtype,
    ):
        self.source, self.cache_dir = source, cache_dir
        self.text_len, self.text_dim = text_len, text_dim
        self.device, self.dtype = device, dtype
        self._contexts: dict[str, torch.Tensor] = {}

    def prepare(self, prompts: Sequence[str]) -> None:
        """Encode every prompt not held yet, all with a single encoder load, then free the encoder."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._contexts]
        if not missing:
            return
        rows = encode_prompts(missing, self.source, self.cache_dir, dtype=TEXT_DTYPE, device=self.device,
                              max_length=self.text_len)
        width = rows[0].shape[-1]
        if width != self.text_dim:
            raise ValueError(f"the text encoder gives {width}-wide rows but the DiT takes text_dim={self.text_dim}")
        self._contexts.update(zip(missing, rows, strict=True))

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """``[B, text_len, text_dim]`` contexts on the pipeline's device and dtype, rows past each prompt zero."""
        self.prepare(prompts)
        return torch.stack([self._contexts[p] for p in prompts]).to(device=self.device, dtype=self.dtype)


class WanVideoPipeline(VideoPipeline):
    """`VideoPipeline` with the Wan VAE's frame arithmetic and a prompt pre-encoding step."""

    def latent_frames(self, seconds: float) -> int:
        """Latent frames for ``seconds`` of video: ``ceil(seconds * fps / 4)``, rounded up to whole chunks.

        This is the count the Self-Forcing family names by its length (5 s -> 21 latents as in Self-Forcing,
        60 s -> 240 as in LongLive and the Relax-Forcing evaluation). The VAE turns F latents into
        :meth:`video_frames` = 1 + 4(F - 1) frames, 3 short of 4F: 60 s gives 240 latents -> 957 frames (59.8 s
        at 16 fps), 5 s gives 21 -> 81 frames.
        """
        if not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"--seconds must be positive, got {seconds}")
        chunk = self.model.config.chunk_frames
        latents = math.ceil(round(seconds * self.fps / self.frames_per_latent, 9))
        return math.ceil(latents / chunk) * chunk

    def video_frames(self, latent_frames: int) -> int:
        """Frames the streaming VAE decode gives for ``latent_frames`` latents: 1 + 4(F - 1)."""
        if latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
        return 1 + self.frames_per_latent * (latent_frames - 1)

    def prepare(self, prompts: Sequence[str]) -> None:
        """Encode every prompt up front (one umT5 load, freed before any DiT work); optional, as
        ``encode_text`` encodes missing prompts itself."""
        if isinstance(self.encode_text, PromptContexts):
            self.encode_text.prepare(prompts)


def load_wan(
    checkpoint: str | Path,
    wan_dir: str | Path | None,
    lora: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    text_cache: str | Path | None = None,
    size: str | None = None,
    key: str | None = None,
) -> WanVideoPipeline:
    """A ready pipeline for a causal Wan2.1 DiT checkpoint and the Wan2.1 folder that holds its VAE and umT5.

    Args:
        checkpoint: the DiT in any layout :func:`~relaxforcing.checkpoints.load_dit` reads (Self-Forcing ``.pt``,
            original or sharded safetensors, diffusers, LongLive base).
        wan_dir: the ``Wan2.1-T2V-1.3B`` folder (see :func:`wan_files`); its ``config.json`` sizes the DiT when the
            checkpoint has none beside it. Default: the checkpoint itself when it is such a folder.
        lora: a LongLive ``lora.pt`` merged into the DiT.
        device: where everything runs; the umT5 encoder too, one load per :meth:`PromptContexts.prepare`.
        dtype: DiT and VAE dtype; default bf16 on CUDA, fp32 on CPU. umT5 always runs in bf16.
        text_cache: folder of cached prompt embeddings; default :func:`default_text_cache`.
        size: ``WIDTHxHEIGHT``, one of :data:`SIZES`; default :data:`DEFAULT_SIZE`.
        key: checkpoint entry holding the DiT (default ``generator_ema``, else ``generator``, else ``model``).

    Raises:
        ValueError: unknown size, missing files (named), or a checkpoint, VAE or encoder that does not fit.
    """
    size = size or DEFAULT_SIZE
    if size not in SIZES:
        raise ValueError(f"size {size!r} is not supported; choose one of {', '.join(SIZES)} (WIDTHxHEIGHT)")
    if wan_dir is None:
        if not (Path(checkpoint).is_dir() and (Path(checkpoint) / WAN_VAE_FILE).is_file()):
            raise ValueError("--wan-dir is needed with --checkpoint (the Wan2.1-T2V-1.3B folder: VAE, umT5, tokenizer)")
        wan_dir = checkpoint
    files = wan_files(wan_dir)
    weights = resolve_weights(checkpoint)
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)

    config = None if (weights.parent / "config.json").is_file() else _json_config(files.config)
    model = load_dit(checkpoint, config, dtype=dtype, device=device, key=key, lora=lora).requires_grad_(False)
    vae = load_wan_vae(files.vae, _vae_sizes(files.vae), dtype=dtype, device=device).requires_grad_(False)
    if vae.config.z_dim != model.config.in_dim:
        raise ValueError(f"the VAE makes {vae.config.z_dim}-channel latents but the DiT takes {model.config.in_dim}")
    encode_text = PromptContexts(files.text, Path(text_cache) if text_cache else default_text_cache(),
                                 model.config.text_len, model.config.text_dim, device, dtype)
    return WanVideoPipeline(
        model=model.eval(),
        encode_text=encode_text,
        codec=WanVAEDecoder(vae),
        latent_hw=SIZES[size],
        fps=FPS,
        frames_per_latent=FRAMES_PER_LATENT,
        name=Path(checkpoint).stem,
    )


def _json_config(file: Path | None) -> WanConfig | None:
    if file is None:
        return None
    try:
        return config_from_json(json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{file}: not a usable Wan DiT config ({err})") from None


def _vae_sizes(vae: Path) -> dict | None:
    """``{"base_dim": ...}`` read off a single-file VAE whose width differs from Wan2.1's 96 (None otherwise)."""
    if vae.is_dir():
        return None
    state = tensors_only(read_checkpoint(vae), vae)  # memory-mapped: the weights are not read twice
    conv_in = state.get("encoder.conv1.weight", state.get("encoder.conv_in.weight"))  # [base_dim, 3, k, k, k]
    if conv_in is None or conv_in.shape[0] == WAN21_VAE_CONFIG["base_dim"]:
        return None  # Wan2.1's own sizes, or not a VAE: load_wan_vae names what is wrong
    return {"base_dim": conv_in.shape[0]}
