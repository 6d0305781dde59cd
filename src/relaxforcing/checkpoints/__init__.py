"""Checkpoint loading: format detection, safe reading, key conversion, config inference, LoRA merging."""

from relaxforcing.checkpoints.diffusers_names import from_diffusers, to_diffusers
from relaxforcing.checkpoints.dit import load_dit, read_dit_state
from relaxforcing.checkpoints.dit_config import infer_config
from relaxforcing.checkpoints.files import CheckpointError, read_checkpoint
from relaxforcing.checkpoints.lora import merge_lora, read_lora

__all__ = [
    "CheckpointError",
    "from_diffusers",
    "infer_config",
    "load_dit",
    "merge_lora",
    "read_checkpoint",
    "read_dit_state",
    "read_lora",
    "to_diffusers",
]
