"""Text encoders that turn prompts into the context the model attends to."""

from relaxforcing.text.toy import ToyTextEncoder

__all__ = ["ToyTextEncoder"]
