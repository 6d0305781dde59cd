"""Wan2.1 VAE: loading the original ``Wan2.1_VAE.pth`` naming and a diffusers folder; streaming == whole decode."""

from __future__ import annotations

import copy
import inspect
import itertools
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKLWan
from torch._dynamo.utils import counters
from wan_fixtures import TINY_VAE, original_name

from relaxforcing.checkpoints import CheckpointError
from relaxforcing.codecs import base
from relaxforcing.codecs.base import AUTO_TILES, VAETiles, parse_vae_tiles
from relaxforcing.codecs.wan_vae import (
    LATENT_MEAN,
    LATENT_STD,
    WAN21_VAE_CONFIG,
    WanVAEDecoder,
    load_wan_vae,
    to_uint8_frames,
)
from relaxforcing.snapshot import load_snapshot, save_snapshot


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return vae


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(2, 16, 5, 2, 4, generator=torch.Generator().manual_seed(1))  # [B, z, F, h, w]


@pytest.fixture(scope="module")
def whole(tiny_vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, 3, T, H, W]`` of the whole video through diffusers' own `AutoencoderKLWan.decode`."""
    with torch.no_grad():
        return tiny_vae.decode(WanVAEDecoder(tiny_vae).denormalize(latents)).sample


def test_wan21_config_matches_published_values_and_diffusers_defaults() -> None:
    defaults = {k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()}
    assert all(defaults[k] == v for k, v in WAN21_VAE_CONFIG.items())
    assert LATENT_MEAN[:3] == (-0.7571, -0.7089, -0.9113) and LATENT_STD[-3:] == (1.1253, 2.8251, 1.9160)


def test_original_pth_naming_loads(tmp_path: Path, tiny_vae: AutoencoderKLWan, latents: torch.Tensor) -> None:
    original = {original_name(k): v for k, v in tiny_vae.state_dict().items()}
    # Names as they appear in the released Wan2.1_VAE.pth.
    for name in ("conv1.weight", "conv2.bias", "encoder.conv1.weight", "encoder.downsamples.3.shortcut.weight",
                 "encoder.downsamples.5.time_conv.weight", "encoder.middle.1.to_qkv.weight",
                 "decoder.middle.2.residual.6.weight", "decoder.upsamples.3.time_conv.weight",
                 "decoder.upsamples.4.shortcut.weight", "decoder.upsamples.11.resample.1.weight",
                 "decoder.upsamples.14.residual.0.gamma", "decoder.head.2.weight"):
        assert name in original, name
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")
    vae = load_wan_vae(tmp_path / "Wan2.1_VAE.pth", config=TINY_VAE)
    assert vae.state_dict().keys() == tiny_vae.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), tiny_vae.state_dict().values(),
                                                 strict=True))
    assert torch.equal(WanVAEDecoder(vae).chunk_decoder().decode(latents[:1, :, :2]),
                       WanVAEDecoder(tiny_vae).chunk_decoder().decode(latents[:1, :, :2]))


def test_diffusers_folder_loads_offline(tmp_path: Path, tiny_vae: AutoencoderKLWan, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_vae.save_pretrained(tmp_path / "vae")
    vae = load_wan_vae(tmp_path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), tiny_vae.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("chunks", [[1, 3, 1], [3, 2], [1, 1, 1, 1, 1]])
def test_streaming_decode_equals_whole_decode(tiny_vae: AutoencoderKLWan, latents: torch.Tensor,
                                              whole: torch.Tensor, chunks: list[int]) -> None:
    assert whole.shape == (2, 3, 1 + 4 * (latents.shape[2] - 1), 16, 32)
    stream = WanVAEDecoder(tiny_vae).chunk_decoder()
    parts, start = [], 0
    for size in chunks:
        parts.append(stream.decode_pixels(latents[:, :, start:start + size]))
        start += size
    assert [p.shape[2] for p in parts] == [1 + 4 * (chunks[0] - 1)] + [4 * n for n in chunks[1:]]
    # Equal up to float rounding: the 1x1x1 post-quant conv runs over chunks here, over the whole video there.
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=0)
    assert whole.std() > 0.1  # not a constant image


def test_uint8_frames(tiny_vae: AutoencoderKLWan, latents: torch.Tensor, whole: torch.Tensor) -> None:
    decoder = WanVAEDecoder(tiny_vae)
    frames = decoder.decode(latents)
    assert frames.dtype == torch.uint8 and frames.shape == (2, 17, 16, 32, 3)  # [B, T, H, W, 3]
    assert torch.equal(frames, to_uint8_frames(whole))
    expected = ((whole.permute(0, 2, 3, 4, 1) + 1) * 127.5).round()
    assert torch.equal(frames.float(), expected)
    assert (decoder.chunk_decoder().decode(latents).int() - frames.int()).abs().max() <= 1


def test_denormalize_uses_published_statistics(tiny_vae: AutoencoderKLWan) -> None:
    z = WanVAEDecoder(tiny_vae).denormalize(torch.ones(1, 16, 1, 1, 1))
    expected = torch.tensor(LATENT_MEAN) + torch.tensor(LATENT_STD)
    torch.testing.assert_close(z.flatten(), expected)


def test_stream_rejects_a_changed_batch(tiny_vae: AutoencoderKLWan, latents: torch.Tensor) -> None:
    stream = WanVAEDecoder(tiny_vae).chunk_decoder()
    stream.decode(latents[:, :, :1])
    with pytest.raises(ValueError, match="batch size changed"):
        stream.decode(latents[:1, :, 1:2])


def test_vae_checkpoint_errors(tmp_path: Path, tiny_vae: AutoencoderKLWan) -> None:
    state = {original_name(k): v for k, v in tiny_vae.state_dict().items()}
    del state["decoder.head.2.bias"]
    torch.save(state, tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(CheckpointError, match=r"missing \(1\): decoder\.conv_out\.bias"):
        load_wan_vae(tmp_path / "Wan2.1_VAE.pth", config=TINY_VAE)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_wan_vae(tmp_path / "Wan2.1_VAE.pth")  # full-size Wan2.1 config against tiny tensors


def test_wan22_vae_is_refused() -> None:
    with pytest.raises(ValueError, match="only the Wan2.1 VAE"):
        WanVAEDecoder(AutoencoderKLWan(base_dim=8, z_dim=16, is_residual=True, patch_size=2, in_channels=12,
                                       out_channels=12))


def test_decoder_state_survives_a_snapshot(tiny_vae: AutoencoderKLWan, latents: torch.Tensor, tmp_path: Path) -> None:
    """A stream stopped after two latents, saved to disk and loaded into a new decoder, goes on bit for bit."""
    straight = WanVAEDecoder(tiny_vae).chunk_decoder()
    straight.decode_pixels(latents[:, :, :2])
    expected = straight.decode_pixels(latents[:, :, 2:])

    first = WanVAEDecoder(tiny_vae).chunk_decoder()
    first.decode_pixels(latents[:, :, :2])
    assert any(k.startswith("cache.") for k in first.state_dict())
    save_snapshot(tmp_path, {"chunk_index": 1}, first.state_dict())
    second = WanVAEDecoder(tiny_vae).chunk_decoder()
    second.load_state_dict(load_snapshot(tmp_path).tensors)
    assert torch.equal(second.decode_pixels(latents[:, :, 2:]), expected)
    with pytest.raises(ValueError, match="batch size changed"):  # the restored stream knows its batch
        second.decode_pixels(latents[:1, :, :1])


def test_channels_last_weights_decode_the_same(tiny_vae: AutoencoderKLWan, latents: torch.Tensor,
                                               whole: torch.Tensor) -> None:
    """The CUDA default (channels-last 3-D convolution weights) changes layout only: diffusers' frames within
    float rounding (here on CPU, float32)."""
    vae = copy.deepcopy(tiny_vae)
    decoder = WanVAEDecoder(vae, channels_last=True)
    assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
    stream = decoder.chunk_decoder()
    pixels = torch.cat([stream.decode_pixels(latents[:, :, :3]), stream.decode_pixels(latents[:, :, 3:])], dim=2)
    torch.testing.assert_close(pixels, whole, atol=1e-5, rtol=0)


def test_encode_frames_is_causal_and_normalised(tiny_vae: AutoencoderKLWan) -> None:
    """Image-to-video encodes frame 0 alone: its latent does not depend on later frames; latents are the posterior
    mean normalised with the published statistics."""
    codec = WanVAEDecoder(tiny_vae)
    frames = torch.randint(0, 256, (1, 9, 16, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    latents = codec.encode_frames(frames)  # [1, z, 3, 2, 4]
    assert latents.shape == (1, 16, 3, 2, 4) and latents.dtype == torch.float32
    alone = codec.encode_frames(frames[:, :1])
    torch.testing.assert_close(alone[:, :, 0], latents[:, :, 0], atol=1e-5, rtol=0)
    pixels = frames.permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [B, 3, T, H, W]
    with torch.no_grad():
        mu = tiny_vae.encode(pixels).latent_dist.mean
    expected = (mu - torch.tensor(LATENT_MEAN)[:, None, None, None]) / torch.tensor(LATENT_STD)[:, None, None, None]
    torch.testing.assert_close(latents, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"encodes 1 \+ 4k frames"):
        codec.encode_frames(frames[:, :4])


@pytest.fixture(scope="module")
def wide() -> torch.Tensor:
    """Latents ``[B, z, F, h, w]`` big enough for 3 x 3 tiles of at most 3 x 4 cells (56x80 pixels)."""
    return torch.randn(2, 16, 4, 7, 10, generator=torch.Generator().manual_seed(3))


def stream_pixels(vae: AutoencoderKLWan, latents: torch.Tensor, tiles: VAETiles | None,
                  chunks: tuple[int, ...] = (1, 2, 1)) -> torch.Tensor:
    stream = WanVAEDecoder(vae, tiles=tiles).chunk_decoder()
    bounds = torch.tensor((0, *chunks)).cumsum(0).tolist()
    return torch.cat([stream.decode_pixels(latents[:, :, a:b]) for a, b in itertools.pairwise(bounds)], dim=2)


def test_tile_layout_partitions_the_frame() -> None:
    assert VAETiles(36, 36).layout(60, 104) == [(0, 30, 0, 34), (0, 30, 34, 69), (0, 30, 69, 104),
                                              (30, 60, 0, 34), (30, 60, 34, 69), (30, 60, 69, 104)]
    assert VAETiles(36, 36).layout(20, 30) == [(0, 20, 0, 30)]  # fits: whole frames
    assert VAETiles(3, 4).layout(7, 10) == [(t, b, left, r) for t, b in ((0, 2), (2, 4), (4, 7))
                                            for left, r in ((0, 3), (3, 6), (6, 10))]


@pytest.mark.parametrize("tiles", [VAETiles(3, 4), VAETiles(7, 3)])
def test_tiled_streaming_decode_equals_untiled(tiny_vae: AutoencoderKLWan, wide: torch.Tensor,
                                               tiles: VAETiles) -> None:
    """Tiles with their own caches, over three chunks, give the untiled stream's pixels to float rounding (measured
    max abs difference, float32, pixels in [-1, 1]: 0 here, 2.4e-7 at 240x320 with 16 tiles): each tile is decoded
    with a margin as wide as the decoder's reach behind the mid block's whole-frame attention, so no border shows."""
    whole_frames = stream_pixels(tiny_vae, wide, None)
    tiled = stream_pixels(tiny_vae, wide, tiles)
    assert tiled.shape == whole_frames.shape == (2, 3, 13, 56, 80)
    torch.testing.assert_close(tiled, whole_frames, atol=1e-5, rtol=0)
    with torch.no_grad():  # and diffusers' own decode of the whole video
        reference = tiny_vae.decode(WanVAEDecoder(tiny_vae).denormalize(wide)).sample
    torch.testing.assert_close(tiled, reference, atol=1e-5, rtol=0)
    assert reference.std() > 0.1


def test_each_tile_caches_its_own_region(tiny_vae: AutoencoderKLWan, wide: torch.Tensor) -> None:
    untiled, tiled = (WanVAEDecoder(tiny_vae, tiles=t).chunk_decoder() for t in (None, VAETiles(3, 4)))
    for stream in (untiled, tiled):
        stream.decode_pixels(wide[:, :, :2])
    state = tiled.state_dict()
    assert state["tiles"].tolist() == [list(t) for t in VAETiles(3, 4).layout(7, 10)]
    assert {k.split(".")[0] for k in state if k.startswith("tile") and "." in k} == {f"tile{k}" for k in range(9)}
    size = {name: sum(t.nbytes for t in s.state_dict().values()) for name, s in (("whole", untiled), ("tiled", tiled))}
    # the tiles' caches cover the frame once plus their margins (wide here: tiles of 3x4 latent cells)
    assert size["whole"] < size["tiled"] < 4 * size["whole"]


def test_tiled_state_survives_a_snapshot(tiny_vae: AutoencoderKLWan, wide: torch.Tensor, tmp_path: Path) -> None:
    """A tiled stream saved after two chunks goes on bit for bit in a new decoder, which takes the saved tiling
    whatever it was made with (a run resumed on another device keeps its tiles)."""
    tiles = VAETiles(3, 4)
    straight = WanVAEDecoder(tiny_vae, tiles=tiles).chunk_decoder()
    straight.decode_pixels(wide[:, :, :1])
    straight.decode_pixels(wide[:, :, 1:3])
    expected = straight.decode_pixels(wide[:, :, 3:])

    first = WanVAEDecoder(tiny_vae, tiles=tiles).chunk_decoder()
    first.decode_pixels(wide[:, :, :1])
    first.decode_pixels(wide[:, :, 1:3])
    save_snapshot(tmp_path, {"chunk_index": 1}, first.state_dict())
    for made_with in (None, VAETiles(2, 2)):
        second = WanVAEDecoder(tiny_vae, tiles=made_with).chunk_decoder()
        second.load_state_dict(load_snapshot(tmp_path).tensors)
        assert torch.equal(second.decode_pixels(wide[:, :, 3:]), expected)
    untiled = WanVAEDecoder(tiny_vae).chunk_decoder()  # and an untiled stream restored into a tiled decoder
    untiled.decode_pixels(wide[:, :, :2])
    restored = WanVAEDecoder(tiny_vae, tiles=tiles).chunk_decoder()
    restored.load_state_dict(untiled.state_dict())
    assert "tiles" not in untiled.state_dict()
    assert torch.equal(restored.decode_pixels(wide[:, :, 2:]), untiled.decode_pixels(wide[:, :, 2:]))


def test_vae_tiles_option_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "device_memory", lambda device: 12 * 2**30 if str(device) == "cuda" else None)
    assert parse_vae_tiles("auto", "cuda") == AUTO_TILES and parse_vae_tiles("auto", "cpu") is None
    monkeypatch.setattr(base, "device_memory", lambda device: 24 * 2**30)  # a 24 GB card decodes whole frames
    assert parse_vae_tiles("auto", "cuda") is None and parse_vae_tiles("12x12", "cuda") == VAETiles(12, 12)
    assert parse_vae_tiles("off", "cuda") is None and parse_vae_tiles(" 30X52 ", "cpu") == VAETiles(30, 52)
    for bad in ("on", "30x", "30x52:8", "-1x4", "4*4", ""):
        with pytest.raises(ValueError, match=r"--vae-tiles .*choose auto, off, or HxW") as error:
            parse_vae_tiles(bad, "cpu")
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="at least 1x1"):
        parse_vae_tiles("0x4", "cpu")


def test_tiled_stream_rejects_a_changed_frame_size(tiny_vae: AutoencoderKLWan, wide: torch.Tensor) -> None:
    stream = WanVAEDecoder(tiny_vae, tiles=VAETiles(3, 4)).chunk_decoder()
    stream.decode(wide[:, :, :1])
    with pytest.raises(ValueError, match="latent frame size changed mid-stream: 6x10 after 7x10"):
        stream.decode(wide[:, :, 1:2, :6])


@pytest.mark.e2e  # inductor compiles C++ kernels for the decoder: a minute or two on two cores
def test_compiled_streaming_decode_equals_eager(tiny_vae: AutoencoderKLWan, latents: torch.Tensor,
                                                whole: torch.Tensor) -> None:
    """A compiled untiled stream (its up path one compiled function) decodes every chunk as the eager stream does,
    to float32 rounding. The first chunk, whose caches are still filling, runs eagerly and compiles nothing (also
    when it comes in two calls, its first latent frame first, as `VideoOutput` decodes a stream's first chunk); the
    steady state takes at most two graphs (the caches the eager chunk left, then the compiled graph's own layout) and
    then no more. A tiled stream of the same codec stays eager (one graph per tile shape would be needed)."""
    codec = WanVAEDecoder(tiny_vae).with_compiled()
    assert codec.compiled and not WanVAEDecoder(tiny_vae).compiled
    torch._dynamo.reset()
    counters.clear()
    split = codec.chunk_decoder()
    first = torch.cat([split.decode_pixels(latents[:, :, 0:1]), split.decode_pixels(latents[:, :, 1:2])], dim=2)
    stream = codec.chunk_decoder()
    parts = [stream.decode_pixels(latents[:, :, 0:2])]
    assert counters["stats"]["unique_graphs"] == 0
    torch.testing.assert_close(first, parts[0], atol=1e-5, rtol=0)
    parts += [stream.decode_pixels(latents[:, :, a:b]) for a, b in [(2, 3), (3, 5)]]
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-5, rtol=0)
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(2):
        stream.decode_pixels(torch.randn_like(latents[:, :, :2]))
    assert 1 <= graphs <= 2 and counters["stats"]["unique_graphs"] == graphs and not counters["graph_break"]
    tiled = codec.with_tiles(VAETiles(1, 2)).chunk_decoder()
    assert tiled._up == tiled._tail and stream._up != stream._tail
