"""The tiny TAEHV-architecture decoder for Wan 2.1 latents: public file layout, safe loading, streaming decode."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from wan_fixtures import SMALL_TAE, public_tae_file, tae_layout

from relaxforcing.checkpoints.files import CheckpointError
from relaxforcing.codecs.tiny_wan import TinyWanCodec, TinyWanDecoder, load_tiny_wan_decoder


def test_the_model_has_exactly_the_public_layout():
    model = TinyWanDecoder(widths=SMALL_TAE)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == tae_layout(SMALL_TAE)
    assert sum(p.numel() for p in TinyWanDecoder().parameters()) == pytest.approx(9.8e6, rel=0.1)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_loads_the_decoder_half_of_either_file(tmp_path, kind):
    path = public_tae_file(tmp_path, kind=kind, first_tgrow=2)  # a stride-2 first TGrow: its last-timestep half is kept
    model = load_tiny_wan_decoder(path)
    saved = torch.load(path, weights_only=True) if kind == "pth" else None
    if saved is not None:
        assert torch.equal(model.decoder[7].conv.weight, saved["decoder.7.conv.weight"][SMALL_TAE[0]:])
    assert not any(p.requires_grad for p in model.parameters())


def test_a_wrong_file_is_one_line(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"decoder.1.weight": torch.zeros(8, 48, 3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="not a TAEHV decoder for 16-channel Wan 2.1 latents"):
        load_tiny_wan_decoder(path)
    state = {k: torch.zeros(v) for k, v in tae_layout(SMALL_TAE).items()}
    del state["decoder.9.conv.2.bias"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="missing"):
        load_tiny_wan_decoder(path)


def test_streaming_equals_one_pass_and_counts_frames_like_the_wan_vae(tmp_path):
    codec = TinyWanCodec(load_tiny_wan_decoder(public_tae_file(tmp_path)))
    latents = torch.randn(2, 16, 6, 3, 4, generator=torch.Generator().manual_seed(1))
    whole = codec.chunk_decoder().decode(latents)
    assert whole.shape == (2, codec.video_frames(6), 24, 32, 3) and codec.video_frames(6) == 21
    for sizes in ([3, 3], [1, 2, 3], [2, 1, 1, 2]):
        stream, parts, start = codec.chunk_decoder(), [], 0
        for size in sizes:
            parts.append(stream.decode(latents[:, :, start:start + size]))
            start += size
        assert [p.shape[1] for p in parts] == [4 * sizes[0] - 3] + [4 * n for n in sizes[1:]]
        assert (torch.cat(parts, dim=1).int() - whole.int()).abs().max() <= 1  # batched convs round differently
    assert whole.float().std() > 1  # not a constant image
    batched = codec.chunk_decoder()._decode_step(latents)  # all six latent frames through each layer together
    assert (batched.int() - whole.int()).abs().max() <= 1


def test_memory_is_the_previous_input_and_survives_a_snapshot(tmp_path):
    codec = TinyWanCodec(load_tiny_wan_decoder(public_tae_file(tmp_path)))
    latents = torch.randn(1, 16, 4, 3, 4, generator=torch.Generator().manual_seed(2))
    first = codec.chunk_decoder()
    first.decode(latents[:, :, :2])
    resumed = codec.chunk_decoder()
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.decode(latents[:, :, 2:]), first.decode(latents[:, :, 2:]))
    fresh = codec.chunk_decoder()  # the same latents without their past decode to other frames
    fresh.decode(latents[:, :, 2:3])
    assert not torch.equal(fresh.decode(latents[:, :, 3:]), codec.chunk_decoder().decode(latents)[:, -4:])
