"""The live web viewer: watch a video stream chunk by chunk, inspect its memory, switch prompts mid-stream.

Nothing is imported here, so the CLI loads without the ``serve`` extra (FastAPI, uvicorn); see ``server.app``.
"""
