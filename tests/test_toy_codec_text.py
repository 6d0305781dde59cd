"""Toy codec (lossless space-to-depth, streaming decode) and toy text encoder (closed vocabulary)."""

from __future__ import annotations

import pytest
import torch

from relaxforcing.codecs import SpaceToDepthCodec
from relaxforcing.text import ToyTextEncoder
from relaxforcing.toyworld import VOCABULARY, render_batch, sample_world, to_float

PROMPT = "a red circle and a blue square bouncing on a black background"


def test_codec_round_trip_is_exact() -> None:
    codec = SpaceToDepthCodec()
    video = torch.rand(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (2, 192, 2, 16, 16)
    assert torch.equal(codec.decode(latents), video)
    assert torch.equal(codec.encode(codec.decode(latents)), latents)


def test_codec_channel_layout() -> None:
    video = torch.zeros(1, 4, 3, 64, 64)
    f, c, y, x = 2, 1, 4 * 5 + 3, 4 * 7 + 1  # frame 2, green, cell (5, 7), offset (dy, dx) = (3, 1)
    video[0, f, c, y, x] = 1.0
    latents = SpaceToDepthCodec().encode(video)
    channel = ((f * 3 + c) * 4 + 3) * 4 + 1
    assert latents[0, channel, 0, 5, 7] == 1.0 and latents.sum() == 1.0


def test_codec_rejects_bad_shapes() -> None:
    codec = SpaceToDepthCodec()
    with pytest.raises(ValueError, match="multiple of 4"):
        codec.encode(torch.zeros(1, 6, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        codec.encode(torch.zeros(1, 4, 64, 64, 3))
    with pytest.raises(ValueError, match="192"):
        codec.decode(torch.zeros(1, 16, 1, 16, 16))


def test_streaming_decode_returns_the_rendered_frames() -> None:
    codec = SpaceToDepthCodec()
    video, _ = render_batch([sample_world(0), sample_world(1)], 24)  # [B, T, H, W, 3] uint8
    latents = codec.encode(to_float(video))  # [B, 192, 6, 16, 16]
    stream = codec.chunk_decoder()
    chunks = [stream.decode(latents[:, :, i : i + 3]) for i in range(0, 6, 3)]
    assert chunks[0].shape == (2, 12, 64, 64, 3) and chunks[0].dtype == torch.uint8
    assert torch.equal(torch.cat(chunks, 1), video)
    assert stream.frames_decoded == 24


def test_text_encoder_shapes_and_padding() -> None:
    encoder = ToyTextEncoder(VOCABULARY)
    out = encoder.encode([PROMPT, "", "A red circle, bouncing on a black background!"])
    assert out.shape == (3, encoder.text_len, encoder.text_dim) == (3, 24, 64) and out.dtype == torch.float32
    assert out[0, :12].abs().sum(-1).min() > 0 and (out[0, 12:] == 0).all()
    assert (out[1] == 0).all()
    short = encoder.encode(["a red circle bouncing on a black background"])[0]
    torch.testing.assert_close(out[2], short)  # case and punctuation do not matter
    torch.testing.assert_close(out[0, :3], short[:3])  # same words, same positions


def test_text_encoder_is_deterministic_and_pinned() -> None:
    a, b = ToyTextEncoder(VOCABULARY).encode([PROMPT]), ToyTextEncoder(VOCABULARY).encode([PROMPT])
    assert torch.equal(a, b)
    # Pins the seeded table: the shipped toy model was trained against these vectors.
    red = ToyTextEncoder(VOCABULARY).encode(["red"])[0, 0, :4]
    torch.testing.assert_close(red, torch.tensor([0.051967, 0.173662, -1.070354, 2.407462]), atol=1e-5, rtol=0)


def test_text_encoder_errors() -> None:
    encoder = ToyTextEncoder(VOCABULARY)
    with pytest.raises(ValueError, match=r"unknown word 'sqare'.*did you mean 'square'"):
        encoder.encode(["a red sqare bouncing on a black background"])
    with pytest.raises(ValueError, match="at most 24"):
        encoder.encode([" ".join(["red"] * 25)])
    with pytest.raises(TypeError, match="list of prompts"):
        encoder.encode(PROMPT)
    assert set(encoder.vocabulary) == set(VOCABULARY)


def test_phrase_context_binds_each_word_to_its_phrase():
    from relaxforcing.toyworld.captions import PHRASE_STARTS

    plain, phrased = ToyTextEncoder(VOCABULARY), ToyTextEncoder(VOCABULARY, phrase_starts=PHRASE_STARTS)
    red_circle = phrased.encode(["a red circle and a blue square bouncing on a black background"])
    blue_circle = phrased.encode(["a blue circle and a red square bouncing on a black background"])
    assert not torch.allclose(red_circle[0, 2], blue_circle[0, 2])  # "circle" knows its colour
    assert not torch.equal(red_circle[0, 4:7], blue_circle[0, 4:7])  # the second phrase differs too
    assert torch.equal(red_circle[0, 8:], blue_circle[0, 8:])  # "bouncing on a black background" is shared
    same = plain.encode(["a red circle and a blue square bouncing on a black background"])
    assert not torch.equal(same, red_circle)


def test_guidance_one_is_off_and_above_one_changes_the_video():
    import dataclasses

    from relaxforcing.loaders import load_toy

    pipe = load_toy()
    prompt, frames = "a red circle bouncing on a black background", 2 * pipe.chunk_frames

    def latents(guidance: float) -> torch.Tensor:
        pipe.schedule = dataclasses.replace(pipe.schedule, guidance=guidance)
        return torch.cat([c.latents for c in pipe.session([prompt], [0], frames, "relax")], dim=2)

    base = latents(1.0)
    assert torch.equal(base, latents(1.0))
    assert not torch.allclose(base, latents(2.0))
