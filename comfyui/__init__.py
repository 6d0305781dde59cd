"""ComfyUI custom nodes for `relaxforcing`: long autoregressive video with structured KV memory.

Link or copy this folder into ``ComfyUI/custom_nodes/`` and install the ``relaxforcing`` package into ComfyUI's
Python environment (``pip install -e /path/to/relaxforcing``); docs/comfyui.md in the repository has the details.
"""

try:
    import relaxforcing  # noqa: F401
except ImportError as error:  # ComfyUI logs this as the reason for "IMPORT FAILED"
    raise ImportError(
        "the relaxforcing nodes need the `relaxforcing` package in ComfyUI's Python environment: run "
        "`pip install -e /path/to/relaxforcing` with that environment's pip"
    ) from error

from .long_video import RelaxForcingLongVideo
from .memory_nodes import MEMORY_DISPLAY_NAMES, MEMORY_NODES
from .model_loader import RelaxForcingLoadModel

NODE_CLASS_MAPPINGS = {
    "RelaxForcingLoadModel": RelaxForcingLoadModel,
    **MEMORY_NODES,
    "RelaxForcingLongVideo": RelaxForcingLongVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "RelaxForcingLoadModel": "Relax Forcing: Load Model",
    **MEMORY_DISPLAY_NAMES,
    "RelaxForcingLongVideo": "Relax Forcing: Long Video",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
