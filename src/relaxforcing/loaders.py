"""Loading a ready VideoPipeline: the embedded toy model (default), a real Self-Forcing/Wan checkpoint with its
Wan2.1 folder, or a full-size model with random weights (benchmarks)."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file

from relaxforcing.distributed import local_device
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.sampling.sampler import check_offload
from relaxforcing.sampling.schedule import FlowSchedule

TOY_WEIGHTS = "toy.safetensors"
TOY_META = "toy.json"
SIZES: dict[str, tuple[int, int]] = {"832x480": (60, 104), "480x832": (104, 60)}
"""Supported ``WIDTHxHEIGHT`` (Wan's ``SUPPORTED_SIZES`` for 1.3B) -> latent ``(h, w)``; the VAE shrinks space by 8."""
DEFAULT_SIZE = "832x480"
"""Landscape 832 wide, 480 high: latents 60x104, 1560 DiT tokens per latent frame."""
FPS = 16
"""Frame rate of Wan2.1 and every Self-Forcing-family model."""

WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_TOKENIZER_DIR = "google/umt5-xxl"


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
    from relaxforcing.text.umt5 import WAN_T5_FILE

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


def toy_weights_dir() -> Path:
    return Path(str(resources.files("relaxforcing") / "weights"))


def load_toy(device: str = "cpu", weights_dir: Path | None = None) -> VideoPipeline:
    """The embedded toy model of the procedural world (64x64 video at 16 fps), shipped inside the package."""
    from relaxforcing.codecs.toy_autoencoder import ToyAutoencoder
    from relaxforcing.text.toy import ToyTextEncoder
    from relaxforcing.toyworld.captions import VOCABULARY
    from relaxforcing.toyworld.prompts import read_prompt

    folder = weights_dir or toy_weights_dir()
    weights, meta_path = folder / TOY_WEIGHTS, folder / TOY_META
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"the embedded toy model is missing from {folder}; reinstall relaxforcing or "
                                "train one with `relaxforcing train-toy`")
    meta = json.loads(meta_path.read_text())
    model = CausalWanModel(WanConfig.from_dict(meta["model"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    model = model.to(device).eval().requires_grad_(False)
    codec = ToyAutoencoder()
    codec.load_state_dict(load_file(str(folder / meta["codec"]["file"])), strict=True)
    codec = codec.to(device).eval().requires_grad_(False)
    schedule = meta["schedule"]
    return VideoPipeline(
        model=model,
        encode_text=ToyTextEncoder(VOCABULARY, device, reader=read_prompt,
                                   phrase_starts=meta.get("text", {}).get("phrase_starts", ())),
        codec=codec,
        latent_hw=tuple(meta["latent_hw"]),
        fps=meta["fps"],
        frames_per_latent=meta["frames_per_latent"],
        schedule=FlowSchedule(**{**schedule, "steps": tuple(schedule["steps"])}),
        upscale=meta.get("upscale", 1),
        name="toy",
    )


def load_pipeline(
    checkpoint: Path | None = None,
    wan_dir: Path | None = None,
    lora: Path | None = None,
    device: str | None = None,
    size: str | None = None,
    compile: bool | None = None,
    offload: str = "auto",
) -> VideoPipeline:
    """The toy model when no checkpoint is given, else the Wan2.1 stack (DiT + umT5 + Wan VAE) at ``size``.

    ``compile`` compiles the DiT's chunk step (:meth:`CausalWanModel.compile_blocks`) and the Wan VAE's streaming
    decode; default: on CUDA only.
    ``offload`` says where sessions keep their frame stores (:func:`~relaxforcing.sampling.sampler.resolve_offload`).
    """
    check_offload(offload)
    device = device or local_device()
    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    if checkpoint is None:
        if wan_dir is not None or lora is not None:
            raise ValueError("--wan-dir and --lora need --checkpoint")
        if size not in (None, "64x64"):
            raise ValueError(f"size {size} is not supported by the embedded toy model, which makes 64x64 video; "
                             "other sizes need a Wan --checkpoint")
        pipe = load_toy(device)
    else:
        pipe = load_wan(checkpoint, wan_dir, lora=lora, device=device, size=size)
    pipe.offload = offload
    return compiled_if(pipe, compile)


def with_decoder(pipe: VideoPipeline, decoder: str, weights: Path | None = None,
                 random_ok: bool = False) -> VideoPipeline:
    """``pipe`` decoding with ``decoder``: ``wan`` (the full Wan VAE, as loaded) or ``tae`` (the tiny TAEHV preview
    decoder from ``weights``, e.g. ``taew2_1.safetensors``; with ``random_ok``, random weights when None, for a
    speed test)."""
    if decoder not in ("wan", "tae"):
        raise ValueError(f"--decoder {decoder!r}: choose wan (the full Wan VAE) or tae (the tiny preview decoder)")
    if decoder == "wan":
        if weights is not None:
            raise ValueError("--decoder-weights goes with --decoder tae")
        return pipe
    from relaxforcing.codecs.tiny_wan import TinyWanCodec, TinyWanDecoder, load_tiny_wan_decoder
    from relaxforcing.codecs.wan_vae import WanVAEDecoder  # needs diffusers (the real extra)

    if not isinstance(pipe.codec, WanVAEDecoder):
        raise ValueError("--decoder tae decodes Wan 2.1 latents; the embedded toy model has its own codec")
    param = pipe.model.patch_embedding.weight
    if weights is None:
        if not random_ok:
            raise ValueError("--decoder tae needs --decoder-weights FILE (taew2_1.safetensors or taew2_1.pth)")
        model = TinyWanDecoder().to(param.device, param.dtype).eval().requires_grad_(False)
    else:
        model = load_tiny_wan_decoder(weights, param.dtype, param.device)
    pipe.codec = TinyWanCodec(model)
    return pipe


def with_vae_tiles(pipe: VideoPipeline, spec: str) -> VideoPipeline:
    """``pipe`` with its Wan VAE decoding in the spatial tiles ``spec`` names (``--vae-tiles``: auto, off or HxW
    latent cells; see :func:`~relaxforcing.codecs.base.parse_vae_tiles`); auto and off leave other codecs as they
    are, a tile size needs the Wan VAE."""
    from relaxforcing.codecs.base import parse_vae_tiles

    tiles = parse_vae_tiles(spec, pipe.model.patch_embedding.weight.device)
    if hasattr(pipe.codec, "with_tiles"):  # the Wan VAE (imported only with diffusers, the real extra)
        pipe.codec = pipe.codec.with_tiles(tiles)
    elif spec.strip().lower() not in ("auto", "off"):
        raise ValueError(f"--vae-tiles {spec} tiles the full Wan VAE; this pipeline decodes with "
                         f"{type(pipe.codec).__name__}")
    return pipe


def compiled_if(pipe: VideoPipeline, compile: bool | None) -> VideoPipeline:
    """``pipe`` with its DiT, and its Wan VAE's streaming decode, compiled when ``compile`` says so (None: when it
    runs on CUDA)."""
    if compile if compile is not None else pipe.model.patch_embedding.weight.is_cuda:
        pipe.model.compile_blocks()
        if hasattr(pipe.codec, "with_compiled"):  # the Wan VAE (imported only with diffusers, the real extra)
            pipe.codec = pipe.codec.with_compiled()
    return pipe


def random_pipeline(preset: str, device: str | None = None, compile: bool | None = None, offload: str = "auto"
                    ) -> VideoPipeline:
    """A full-size model with random weights (speed does not depend on them): the DiT preset in bf16 on CUDA,
    random 512-token text embeddings, and the full Wan VAE decoder with random weights; 832x480 latents. ``compile``
    and ``offload`` as in :func:`load_pipeline`."""
    check_offload(offload)
    from diffusers import AutoencoderKLWan

    from relaxforcing.codecs.wan_vae import WAN21_VAE_CONFIG, WanVAEDecoder

    device = device or local_device()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = WanConfig.from_name(preset)
    with torch.device(device):
        model = CausalWanModel(cfg).to(dtype).eval().requires_grad_(False)
    vae = WanVAEDecoder(AutoencoderKLWan(**WAN21_VAE_CONFIG).to(device, dtype).eval())
    return compiled_if(VideoPipeline(model=model, encode_text=_RandomContexts(cfg, device, dtype), codec=vae,
                                     latent_hw=SIZES[DEFAULT_SIZE], name=f"{preset} (random weights)",
                                     offload=offload), compile)


class _RandomContexts:
    """Random ``[B, text_len, text_dim]`` contexts, one fixed draw per prompt: the text encoder of a random-weight
    model (the same prompt and seed make the same video)."""

    def __init__(self, cfg: WanConfig, device: str, dtype: torch.dtype):
        self.shape, self.device, self.dtype = (cfg.text_len, cfg.text_dim), device, dtype

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        draws = [torch.randn(self.shape, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                 for p in prompts]
        return torch.stack(draws).to(self.device, self.dtype)

    def prepare(self, prompts: list[str]) -> None:
        pass

    def interpret(self, prompt: str) -> str | None:
        return None


def load_wan(
    checkpoint: str | Path,
    wan_dir: str | Path | None,
    lora: str | Path | None = None,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    text_cache: str | Path | None = None,
    size: str | None = None,
    key: str | None = None,
) -> VideoPipeline:
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
    from relaxforcing.checkpoints import load_dit
    from relaxforcing.checkpoints.files import resolve_weights
    from relaxforcing.codecs.wan_vae import FRAMES_PER_LATENT, WanVAEDecoder, load_wan_vae
    from relaxforcing.text.contexts import PromptContexts, default_text_cache

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
    return VideoPipeline(
        model=model.eval(),
        encode_text=encode_text,
        codec=WanVAEDecoder(vae),
        latent_hw=SIZES[size],
        fps=FPS,
        frames_per_latent=FRAMES_PER_LATENT,
        name=Path(checkpoint).stem,
    )


def _json_config(file: Path | None) -> WanConfig | None:
    from relaxforcing.checkpoints.dit_config import config_from_json

    if file is None:
        return None
    try:
        return config_from_json(json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{file}: not a usable Wan DiT config ({err})") from None


def _vae_sizes(vae: Path) -> dict | None:
    """``{"base_dim": ...}`` read off a single-file VAE whose width differs from Wan2.1's 96 (None otherwise)."""
    from relaxforcing.checkpoints.files import read_checkpoint, tensors_only
    from relaxforcing.codecs.wan_vae import WAN21_VAE_CONFIG

    if vae.is_dir():
        return None
    state = tensors_only(read_checkpoint(vae), vae)  # memory-mapped: the weights are not read twice
    conv_in = state.get("encoder.conv1.weight", state.get("encoder.conv_in.weight"))  # [base_dim, 3, k, k, k]
    if conv_in is None or conv_in.shape[0] == WAN21_VAE_CONFIG["base_dim"]:
        return None  # Wan2.1's own sizes, or not a VAE: load_wan_vae names what is wrong
    return {"base_dim": conv_in.shape[0]}
