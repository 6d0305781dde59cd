"""Command-line options shared by several commands (``generate``, ``bench``, ``sweep``, ``serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CompileOption = Annotated[bool | None, typer.Option(
    "--compile/--no-compile",
    help="Compile the DiT's chunk step and the Wan VAE's streaming decode (torch.compile; default: on CUDA only).")]
DecoderOption = Annotated[str, typer.Option(
    help="wan (the full Wan VAE) or tae (the tiny TAEHV preview decoder, --decoder-weights taew2_1.safetensors); "
         "Wan checkpoints only.")]
DecoderWeightsOption = Annotated[Path | None, typer.Option(
    help="Weights of the tiny decoder (taew2_1.pth or .safetensors).")]
OffloadOption = Annotated[str, typer.Option(
    help="Where the frame store lives: auto (history on CUDA for policies that keep frames they rarely read, such as "
         "relax; else none), none (all on the device), history (older frames in host memory, copied in when "
         "attended), all (every frame in host memory).")]
VaeTilesOption = Annotated[str, typer.Option(
    help="Decode the Wan VAE in spatial tiles, each with its own causal cache (same frames to float rounding, less "
         "memory per decode, slower): auto (tiles of at most 36x36 latent cells on GPUs under 16 GiB, whole frames "
         "elsewhere), off, or HxW latent cells per tile.")]
