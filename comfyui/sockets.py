"""The custom socket types that connect this package's nodes (ComfyUI matches sockets by these names)."""

MODEL = "RELAXFORCING_MODEL"
"""A loaded :class:`relaxforcing.pipeline.VideoPipeline` (the model loader's output)."""

MEMORY = "RELAXFORCING_MEMORY"
"""A memory policy spec string such as ``relax:sink=2,lambda=2.0`` (a memory node's output)."""

CATEGORY = "relaxforcing"
"""Where the nodes appear in ComfyUI's node menu."""
