"""relaxforcing: long autoregressive video diffusion with structured KV memory."""

__version__ = "0.1.0"
__all__ = ["__version__"]
