"""Text encoders that turn prompts into the context the model attends to."""

from relaxforcing.text.base import TextEncoder
from relaxforcing.text.toy import ToyTextEncoder

__all__ = ["TextEncoder", "ToyTextEncoder"]
