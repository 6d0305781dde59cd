"""The decoders a viewer offers its pages: the model's own codec, and the tiny TAEHV preview decoder when its weights
were given. They share the loaded weights; each job pane gets its own streaming chunk decoder from its codec."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from relaxforcing.codecs.base import Codec
from relaxforcing.pipeline import VideoPipeline

LABELS = {"wan": "Wan VAE", "tae": "TAEHV tiny (preview)", "toy": "toy codec"}
"""What the page shows for each decoder name (a name not listed is shown as is)."""


def label(name: str) -> str:
    return LABELS.get(name, name)


def own_decoder(pipeline: VideoPipeline) -> str:
    """The name of the pipeline's own codec: ``toy`` for the embedded toy model, ``wan`` (the Wan VAE) otherwise."""
    return "toy" if pipeline.name == "toy" else "wan"


def check_decoder_options(decoder: str, weights: Path | None, toy: bool) -> None:
    """Check ``serve --decoder/--decoder-weights`` before the model loads; ValueError for an unknown ``decoder``,
    ``tae`` without ``weights``, or the tiny decoder asked of the ``toy`` model."""
    if decoder not in ("wan", "tae"):
        raise ValueError(f"--decoder {decoder!r}: choose wan (the full Wan VAE) or tae (the tiny preview decoder)")
    if toy and (decoder == "tae" or weights is not None):
        raise ValueError("the tiny decoder (--decoder tae, --decoder-weights) decodes Wan 2.1 latents; the embedded "
                         "toy model has its own codec")
    if decoder == "tae" and weights is None:
        raise ValueError("--decoder tae needs --decoder-weights FILE (taew2_1.safetensors or taew2_1.pth)")


def offered_decoders(pipeline: VideoPipeline, decoder: str = "wan", weights: Path | None = None
                     ) -> tuple[dict[str, Codec], str]:
    """``serve --decoder/--decoder-weights`` -> (decoders by name, the one a page starts with).

    A Wan model offers its VAE as ``wan`` and, with ``weights``, the tiny decoder as ``tae`` (~10 M parameters; no
    second VAE is loaded). The toy model offers only its own codec, ``toy`` (``--decoder wan`` means the model's
    own codec there). Raises ValueError as :func:`check_decoder_options` does, or for a ``weights`` file that is not
    a TAEHV Wan 2.1 decoder.
    """
    own = own_decoder(pipeline)
    check_decoder_options(decoder, weights, toy=own == "toy")
    decoders: dict[str, Codec] = {own: pipeline.codec}
    if weights is None:
        return decoders, own
    from relaxforcing.loaders import with_decoder

    decoders["tae"] = with_decoder(copy.copy(pipeline), "tae", weights).codec  # a copy: the pipeline keeps its VAE
    return decoders, decoder


def check_decoder(name: object, decoders: Mapping[str, Codec]) -> str:
    """``name`` if ``decoders`` has it; ValueError saying what is offered otherwise."""
    offered = ", ".join(decoders)
    if not isinstance(name, str):
        raise ValueError(f"decoder must be a decoder name, got {name!r}; this server offers {offered}")
    if name in decoders:
        return name
    if name == "tae":
        raise ValueError(f"the tiny decoder (tae) is not loaded on this server (start it with --decoder-weights "
                         f"taew2_1.safetensors); it offers {offered}")
    if name in LABELS:
        raise ValueError(f"decoder {name!r} does not decode this model's latents; this server offers {offered}")
    raise ValueError(f"unknown decoder {name!r}; this server offers {offered}")
