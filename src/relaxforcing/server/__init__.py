"""The live web viewer: watch a video stream chunk by chunk, inspect its memory, switch prompts mid-stream."""

from relaxforcing.server.app import create_app

__all__ = ["create_app"]
