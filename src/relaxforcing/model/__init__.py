"""The causal Wan2.1 DiT, its configuration and its RoPE."""

from relaxforcing.model.config import PRESETS, WanConfig
from relaxforcing.model.wan import CausalWanModel

__all__ = ["PRESETS", "CausalWanModel", "WanConfig"]
