"""umT5 text encoder: tiny encoder + tokenizer saved locally (Wan .pth layout and transformers folder), offline;
rows past the prompt zeroed; the on-disk prompt cache is hit on the second call and the encoder is freed."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from transformers import UMT5EncoderModel
from wan_fixtures import MAX_LEN, WORDS, tiny_tokenizer, tiny_umt5, track_encoder_loads, wan_state, write_wan_folder

from relaxforcing.checkpoints import CheckpointError
from relaxforcing.text import umt5
from relaxforcing.text.umt5 import WAN_T5_FILE, UMT5TextEncoder, clean_prompt, encode_prompts

PROMPTS = ["a cat runs on the beach", "the red car at sunset", "a dog"]


@torch.no_grad()
def reference_rows(model: UMT5EncoderModel, prompts: list[str]) -> list[torch.Tensor]:
    batch = tiny_tokenizer()(prompts, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt")
    hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return [h[:n] for h, n in zip(hidden, batch.attention_mask.sum(1).tolist(), strict=True)]


@pytest.fixture(autouse=True)
def offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_wan_pth_loads_and_matches_transformers(tmp_path: Path) -> None:
    model = tiny_umt5()
    encoder = UMT5TextEncoder.load(write_wan_folder(tmp_path / "wan", model), dtype=torch.float32,
                                   max_length=MAX_LEN)
    rows = encoder.encode(PROMPTS)
    expected = reference_rows(model, PROMPTS)
    assert [r.shape[0] for r in rows] == [7, 6, 3]  # words + EOS
    for got, want in zip(rows, expected, strict=True):
        assert torch.equal(got, want)
    bf16 = UMT5TextEncoder.load(tmp_path / "wan", dtype=torch.bfloat16, max_length=MAX_LEN)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}


def test_transformers_folder_loads(tmp_path: Path) -> None:
    model = tiny_umt5()
    model.save_pretrained(tmp_path / "enc")
    tiny_tokenizer().save_pretrained(tmp_path / "enc")
    rows = UMT5TextEncoder.load(tmp_path / "enc", dtype=torch.float32, max_length=MAX_LEN).encode(PROMPTS[:1])
    torch.testing.assert_close(rows[0], reference_rows(model, PROMPTS[:1])[0])


def test_encode_prompts_pads_with_zeros_and_caches(tmp_path: Path, monkeypatch) -> None:
    model = tiny_umt5()
    wan = write_wan_folder(tmp_path / "wan", model)
    loaded = track_encoder_loads(monkeypatch)
    prompts = [*PROMPTS, PROMPTS[0]]
    first = encode_prompts(prompts, wan, tmp_path / "cache", dtype=torch.float32, device="cpu",
                           max_length=MAX_LEN, batch_size=2)
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None  # loaded once, freed before returning
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 3
    for context, want in zip(first, reference_rows(model, prompts), strict=True):
        n = want.shape[0]
        assert context.shape == (MAX_LEN, 16)
        assert torch.equal(context[:n], want)
        assert not context[n:].any()

    second = encode_prompts(prompts, wan, tmp_path / "cache", dtype=torch.float32, max_length=MAX_LEN)
    assert len(loaded) == 1  # every prompt came from the cache
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))

    torch.save(wan_state(tiny_umt5(seed=1)), wan / WAN_T5_FILE)  # another encoder: another cache key
    third = encode_prompts(prompts[:1], wan, tmp_path / "cache", dtype=torch.float32, max_length=MAX_LEN)
    assert len(loaded) == 2 and not torch.equal(third[0], first[0])


def test_long_prompt_is_truncated_to_max_length(tmp_path: Path) -> None:
    encoder = UMT5TextEncoder.load(write_wan_folder(tmp_path / "wan", tiny_umt5()), dtype=torch.float32,
                                   max_length=MAX_LEN)
    assert encoder.encode([" ".join(WORDS * 3)])[0].shape == (MAX_LEN, 16)


def test_clean_prompt_matches_wan_whitespace_cleaning() -> None:
    assert clean_prompt("  a &amp;amp; b\n\t c  ") == "a & b c"


def test_foreign_encoder_file_is_refused(tmp_path: Path) -> None:
    wan = write_wan_folder(tmp_path / "wan", tiny_umt5())
    torch.save({"decoder.blocks.0.norm1.weight": torch.zeros(16)}, wan / WAN_T5_FILE)
    with pytest.raises(CheckpointError, match="not a Wan umT5 encoder checkpoint"):
        UMT5TextEncoder.load(wan, dtype=torch.float32)


def test_missing_source_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        umt5.resolve_source((tmp_path / "nope.pth", tmp_path))
