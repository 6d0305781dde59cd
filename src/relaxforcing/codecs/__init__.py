"""Codecs between pixels and the latents the model denoises: the Wan VAE (``wan_vae``), the toy world's lossless
space-to-depth packing (``space_to_depth``) and the learned toy autoencoder built on it (``toy_autoencoder``)."""

from relaxforcing.codecs.base import ChunkDecoder, Codec
from relaxforcing.codecs.space_to_depth import SpaceToDepthCodec, SpaceToDepthDecoder

__all__ = ["ChunkDecoder", "Codec", "SpaceToDepthCodec", "SpaceToDepthDecoder"]
