"""umT5 text encoder: tiny encoder + tokenizer saved locally (Wan .pth layout and transformers folder), offline;
rows past the prompt zeroed; the on-disk prompt cache is hit on the second call and the encoder is freed."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from relaxforcing.checkpoints import CheckpointError
from relaxforcing.text import umt5
from relaxforcing.text.umt5 import WAN_T5_FILE, UMT5TextEncoder, clean_prompt, encode_prompts

WORDS = ("a", "cat", "dog", "runs", "on", "the", "beach", "red", "car", "at", "sunset", "slowly")
MAX_LEN = 12
PROMPTS = ["a cat runs on the beach", "the red car at sunset", "a dog"]


def tiny_tokenizer() -> T5TokenizerFast:
    """A word-level Unigram tokenizer with T5's special tokens (pad 0, eos 1, unk 2) and EOS appended."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0 - i) for i, w in enumerate(WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def tiny_umt5(seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    return UMT5EncoderModel(config).eval()


_WAN_NAMES = [  # transformers UMT5 name -> Wan T5Encoder name (wan/modules/t5.py layout)
    (r"shared\.weight", "token_embedding.weight"),
    (r"encoder\.final_layer_norm\.weight", "norm.weight"),
    (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
     r"blocks.\1.pos_embedding.embedding."),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
    (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
]


def wan_state(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        if key == "encoder.embed_tokens.weight":  # tied to shared.weight; Wan stores it once
            continue
        name = next(re.sub(p, r, key) for p, r in _WAN_NAMES if re.match(p, key))
        out[name] = value.clone()
    return out


def write_wan_folder(root: Path, model: UMT5EncoderModel) -> Path:
    """A Wan model folder: the encoder .pth and the tokenizer in google/umt5-xxl/."""
    root.mkdir(parents=True, exist_ok=True)
    torch.save(wan_state(model), root / WAN_T5_FILE)
    tiny_tokenizer().save_pretrained(root / "google" / "umt5-xxl")
    return root


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


def track_encoder_loads(monkeypatch) -> list[weakref.ref]:
    """Record a weak reference to the model of every umT5 encoder loaded from now on (to count loads and check
    that each was freed)."""
    loaded: list[weakref.ref] = []
    real_load = UMT5TextEncoder.load

    def tracking_load(*args, **kwargs) -> UMT5TextEncoder:
        encoder = real_load(*args, **kwargs)
        loaded.append(weakref.ref(encoder.model))
        return encoder

    monkeypatch.setattr(UMT5TextEncoder, "load", tracking_load)
    return loaded


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
