"""The umT5-XXL text encoder of Wan2.1 (transformers `UMT5EncoderModel`) and a disk cache of prompt embeddings."""

from __future__ import annotations

import gc
import hashlib
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path

import ftfy
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from relaxforcing.checkpoints.files import read_checkpoint, tensors_only
from relaxforcing.checkpoints.umt5_names import umt5_config_from_wan, umt5_from_wan

TEXT_LEN = 512
"""Tokens per prompt in Wan2.1 (padded or truncated to this; the DiT attends to all of them)."""

WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
"""Encoder weights in a Wan model folder; the tokenizer sits in ``google/umt5-xxl/`` beside it."""

TextEncoderSource = str | Path | tuple[str | Path, str | Path]
"""A Wan model folder, a diffusers pipeline folder (``text_encoder/`` + ``tokenizer/``), a transformers
encoder folder holding its tokenizer, Wan's ``.pth`` file, or an explicit ``(weights, tokenizer folder)`` pair."""

_HASH_BYTES = 1 << 20
"""Bytes hashed at each end of a weights file to identify it without reading gigabytes."""


def clean_prompt(text: str) -> str:
    """Wan's ``clean='whitespace'``: fix mojibake, unescape HTML twice, collapse whitespace."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def resolve_source(source: TextEncoderSource) -> tuple[Path, Path]:
    """``(weights, tokenizer folder)``; weights is Wan's ``.pth`` file or a transformers model folder."""
    if isinstance(source, tuple):
        weights, tokenizer = (Path(p) for p in source)
    else:
        path = Path(source)
        if path.is_file():
            weights, tokenizer = path, path.parent / "google" / "umt5-xxl"
        elif (path / WAN_T5_FILE).is_file():
            weights, tokenizer = path / WAN_T5_FILE, path / "google" / "umt5-xxl"
        elif (path / "text_encoder").is_dir():
            weights, tokenizer = path / "text_encoder", path / "tokenizer"
        else:
            weights, tokenizer = path, path
    for p in (weights, tokenizer):
        if not p.exists():
            raise ValueError(f"text encoder source {source!r}: {p} does not exist")
    if weights.is_dir() and not (weights / "config.json").is_file():
        raise ValueError(f"text encoder source {source!r}: {weights} has neither {WAN_T5_FILE} nor config.json")
    return weights, tokenizer


def load_umt5(weights: Path, dtype: torch.dtype, device: str | torch.device) -> UMT5EncoderModel:
    """The encoder from Wan's ``.pth`` (safe load, keys renamed) or from a transformers folder, offline."""
    if weights.is_dir():
        model = UMT5EncoderModel.from_pretrained(weights, local_files_only=True, dtype=dtype)
        return model.to(device).eval()
    wan_state = tensors_only(read_checkpoint(weights), weights)
    config = UMT5Config(**umt5_config_from_wan(wan_state))
    # Cast once before renaming, so the two tied embedding names keep sharing one tensor.
    state = umt5_from_wan({k: v.to(device=device, dtype=dtype) for k, v in wan_state.items()})
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


class UMT5TextEncoder:
    """Tokenizer + umT5 encoder producing Wan's text context."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, max_length: int = TEXT_LEN):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(
        cls,
        source: TextEncoderSource,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        max_length: int = TEXT_LEN,
    ) -> UMT5TextEncoder:
        """Load weights and tokenizer from local files only (see :data:`TextEncoderSource`)."""
        weights, tokenizer_dir = resolve_source(source)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        return cls(load_umt5(weights, dtype, device), tokenizer, max_length)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """The encoder's output rows of each prompt, ``[len_i, d_model]`` (len_i <= max_length, EOS included)."""
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", truncation=True,
            max_length=self.max_length, add_special_tokens=True, return_tensors="pt",
        )
        device = self.model.device
        mask = batch.attention_mask.to(device)  # [B, max_length]
        hidden = self.model(input_ids=batch.input_ids.to(device), attention_mask=mask).last_hidden_state
        return [h[:n] for h, n in zip(hidden, mask.sum(dim=1).tolist(), strict=True)]


def pad_rows(rows: torch.Tensor, length: int) -> torch.Tensor:
    """``[n, d]`` -> ``[length, d]`` with rows n.. zero (Wan zeroes the context past the prompt)."""
    return torch.cat([rows, rows.new_zeros(length - rows.shape[0], rows.shape[1])])


def encoder_identity(source: TextEncoderSource, dtype: torch.dtype, max_length: int = TEXT_LEN) -> str:
    """A short hash naming the encoder: every weights and tokenizer file (name, size, first and last MiB),
    the dtype and the token length."""
    weights, tokenizer = resolve_source(source)
    digest = hashlib.sha256(f"umt5|{dtype}|{max_length}".encode())
    for file in sorted(set(_files(weights)) | set(_files(tokenizer))):
        size = file.stat().st_size
        with file.open("rb") as f:
            head = f.read(_HASH_BYTES)
            f.seek(max(size - _HASH_BYTES, len(head)))
            tail = f.read()
        digest.update(f"|{file.name}|{size}|".encode() + head + tail)
    return digest.hexdigest()[:16]


def encode_prompts(
    prompts: Sequence[str],
    encoder_dir_or_files: TextEncoderSource,
    cache_dir: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None,
    max_length: int = TEXT_LEN,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Text contexts ``[max_length, d_model]`` (zero past each prompt), cached on disk per (prompt, encoder).

    The encoder is loaded only if some prompt is not cached yet; it encodes all missing prompts, then is freed
    before this returns, so a later video rollout has the accelerator memory to itself.

    Args:
        prompts: raw prompts (cleaned as Wan cleans them before tokenizing).
        encoder_dir_or_files: see :data:`TextEncoderSource`.
        cache_dir: folder of ``<hash>.safetensors`` files, one per (prompt, encoder identity).
        dtype: encoder dtype (bf16 as in Wan); the embeddings keep it.
        device: where the encoder runs; default CUDA when available.
        max_length: tokens per prompt.
        batch_size: prompts per encoder call.

    Returns:
        One CPU tensor per prompt, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    identity = encoder_identity(encoder_dir_or_files, dtype, max_length)
    files = {p: cache / f"{hashlib.sha256(f'{identity}|{p}'.encode()).hexdigest()}.safetensors" for p in prompts}
    missing = list(dict.fromkeys(p for p in prompts if not files[p].is_file()))
    if missing:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        encoder = UMT5TextEncoder.load(encoder_dir_or_files, dtype, device, max_length)
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            for prompt, rows in zip(chunk, encoder.encode(chunk), strict=True):
                _write_atomic(files[prompt], rows.cpu().contiguous(), {"prompt": prompt, "encoder": identity})
        del encoder
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return [pad_rows(load_file(files[p])["context"], max_length) for p in prompts]


def _write_atomic(file: Path, rows: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write via a temporary name, so an interrupted run never leaves a truncated cache entry."""
    tmp = file.with_suffix(f".tmp{os.getpid()}")
    save_file({"context": rows}, tmp, metadata=metadata)
    os.replace(tmp, file)


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
