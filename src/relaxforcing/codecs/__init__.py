"""Codecs between pixels and the latents the model denoises."""

from relaxforcing.codecs.toy import SpaceToDepthCodec, SpaceToDepthStream

__all__ = ["SpaceToDepthCodec", "SpaceToDepthStream"]
