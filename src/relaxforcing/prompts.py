"""Prompts from the command line or a prompt file, and file-name slugs made from them."""

from __future__ import annotations

import re
from pathlib import Path

MAX_PROMPT_CHARS = 2000


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "video"


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompt argument or the non-empty lines of a prompt file (MovieGen style: one prompt per line)."""
    if (prompt is None) == (prompts_file is None):
        raise ValueError("give exactly one of PROMPT or --prompts FILE")
    if prompts_file is not None:
        if not prompts_file.is_file():
            raise ValueError(f"prompt file {prompts_file} does not exist")
        try:
            text = prompts_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"prompt file {prompts_file} is not UTF-8 text") from None
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"prompt file {prompts_file} holds no prompts")
    else:
        prompts = [prompt]
    for p in prompts:
        if not p.strip():
            raise ValueError("the prompt is empty")
        if len(p) > MAX_PROMPT_CHARS:
            raise ValueError(f"a prompt is {len(p)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return prompts
