"""Model paths as ComfyUI users give them: relative to ComfyUI's model folders (extra_model_paths.yaml included), or
absolute."""

from __future__ import annotations

from pathlib import Path

import folder_paths

CHECKPOINT_FOLDERS = ("diffusion_models", "checkpoints")
"""Where a relative DiT checkpoint (a file, or a folder of shards / a diffusers ``transformer``) is looked up."""
WAN_FOLDERS = ("diffusers", "diffusion_models")
"""Where a relative Wan2.1-T2V-1.3B folder (original or diffusers layout) is looked up; then ``models/`` itself."""
LORA_FOLDERS = ("loras",)
DECODER_FOLDERS = ("vae_approx",)
"""Where ComfyUI keeps tiny preview decoders (TAESD, ``taew2_1.safetensors``)."""


def model_path(value: str, folders: tuple[str, ...], what: str) -> Path | None:
    """The file or folder ``value`` names: None when empty; an absolute path as it is; a relative one in the first of
    ComfyUI's ``folders`` (then ``models/``) that holds it.

    Raises:
        ValueError: nothing by that name exists (the message says where it was looked for).
    """
    value = value.strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        if not path.exists():
            raise ValueError(f"{what} {path} does not exist")
        return path
    bases = [Path(base) for folder in folders for base in folder_paths.get_folder_paths(folder)]
    bases.append(Path(folder_paths.models_dir))
    for base in bases:
        if (base / path).exists():
            return base / path
    raise ValueError(
        f"{what} {value!r} is in none of ComfyUI's model folders ({', '.join(map(str, bases))}); "
        "put it there or give an absolute path"
    )
