"""The model loader node: the embedded toy model by default, a causal Wan2.1 checkpoint when one is given."""

from __future__ import annotations

import logging

import comfy.model_management as model_management

from relaxforcing.loaders import SIZES, load_pipeline, with_decoder
from relaxforcing.pipeline import VideoPipeline

from . import sockets
from .model_paths import CHECKPOINT_FOLDERS, DECODER_FOLDERS, LORA_FOLDERS, WAN_FOLDERS, model_path

log = logging.getLogger(__name__)

AUTO = "auto"
COMPILE = {AUTO: None, "on": True, "off": False}
"""Widget value -> ``load_pipeline(compile=...)`` (auto: on CUDA only)."""
TIPS = {
    "checkpoint": "Empty: the embedded toy model. Else a causal DiT (Self-Forcing .pt, safetensors, a sharded or "
    "diffusers folder, LongLive base): relative to models/diffusion_models or models/checkpoints, or absolute.",
    "wan_dir": "The Wan2.1-T2V-1.3B folder (VAE, umT5, tokenizer; original or diffusers layout): relative to "
    "models/diffusers, models/diffusion_models or models/, or absolute. Needed with a checkpoint that is not itself "
    "such a folder.",
    "lora": "Optional LongLive lora.pt merged into the DiT: relative to models/loras, or absolute.",
    "size": "WIDTHxHEIGHT of a Wan checkpoint's video (auto: 832x480). The toy model makes 64x64 only.",
    "decoder": "wan: the full Wan VAE; tae: the tiny TAEHV preview decoder (Wan checkpoints only).",
    "decoder_weights": "Weights of the tiny decoder (taew2_1.safetensors or .pth): relative to models/vae_approx, or "
    "absolute.",
    "compile": "torch.compile the DiT's chunk step (auto: on CUDA only; the first chunk takes longer).",
}


class RelaxForcingLoadModel:
    """Loads the causal video model. With every path empty: the embedded toy model (64x64 procedural world, CPU
    friendly, no download). With a checkpoint: a Self-Forcing / Wan / diffusers / LongLive DiT plus the Wan2.1 folder
    that holds its VAE and umT5 text encoder."""

    DESCRIPTION = __doc__
    CATEGORY = sockets.CATEGORY
    RETURN_TYPES = (sockets.MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded pipeline (DiT, text encoder, decoder), on ComfyUI's device.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        path = {"default": ""}
        return {
            "required": {
                "checkpoint": ("STRING", {**path, "tooltip": TIPS["checkpoint"]}),
                "wan_dir": ("STRING", {**path, "tooltip": TIPS["wan_dir"]}),
                "lora": ("STRING", {**path, "tooltip": TIPS["lora"]}),
                "size": ([AUTO, *SIZES], {"default": AUTO, "tooltip": TIPS["size"]}),
                "decoder": (["wan", "tae"], {"default": "wan", "tooltip": TIPS["decoder"]}),
                "decoder_weights": ("STRING", {**path, "tooltip": TIPS["decoder_weights"]}),
                "compile": (list(COMPILE), {"default": AUTO, "tooltip": TIPS["compile"]}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str, wan_dir: str, lora: str, decoder_weights: str) -> bool | str:
        """Missing files are reported when the workflow is queued, not after a long load."""
        try:
            model_paths(checkpoint, wan_dir, lora, decoder_weights)
        except ValueError as error:
            return str(error)
        return True

    def load(
        self, checkpoint: str, wan_dir: str, lora: str, size: str, decoder: str, decoder_weights: str, compile: str
    ) -> tuple[VideoPipeline]:
        checkpoint_path, wan_path, lora_path, decoder_path = model_paths(checkpoint, wan_dir, lora, decoder_weights)
        device = model_management.get_torch_device()
        if checkpoint_path is not None:
            model_management.unload_all_models()  # a Wan DiT + VAE + umT5 wants the room ComfyUI's models hold
            model_management.soft_empty_cache()
        pipe = load_pipeline(
            checkpoint=checkpoint_path,
            wan_dir=wan_path,
            lora=lora_path,
            device=str(device),
            size=None if size == AUTO else size,
            compile=COMPILE[compile],
        )
        if decoder != "wan" or decoder_path is not None:  # the default needs no swap (nor diffusers, for the toy)
            with_decoder(pipe, decoder, decoder_path)
        log.info("relaxforcing: loaded %s on %s", pipe.name, device)
        return (pipe,)


def model_paths(checkpoint: str, wan_dir: str, lora: str, decoder_weights: str) -> tuple:
    """The loader's four path widgets resolved (None where empty); ValueError names what is missing."""
    return (
        model_path(checkpoint, CHECKPOINT_FOLDERS, "checkpoint"),
        model_path(wan_dir, WAN_FOLDERS, "Wan folder"),
        model_path(lora, LORA_FOLDERS, "LoRA"),
        model_path(decoder_weights, DECODER_FOLDERS, "decoder weights"),
    )
