"""load_wan on a tiny Wan2.1 folder laid out as the public download: `relaxforcing generate --checkpoint --wan-dir`
writes a playable mp4 of 1 + 4(F - 1) frames; prompts are encoded once, up front; missing files are named."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner
from wan_fixtures import (
    TEST_LATENT_HW,
    TEST_SIZE,
    TINY_WAN,
    public_tae_file,
    tiny_dit,
    track_encoder_loads,
    write_diffusers_dir,
    write_self_forcing_pt,
    write_wan_dir,
)

from relaxforcing import loaders
from relaxforcing.checkpoints import load_dit
from relaxforcing.cli import app
from relaxforcing.evaluation.video_io import iter_frames, probe_video
from relaxforcing.loaders import load_wan
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import VideoPipeline

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

PROMPTS = ["a cat runs on the beach", "the red car at sunset", "a dog"]


@pytest.fixture(autouse=True)
def offline_and_small(monkeypatch, tmp_path: Path) -> None:
    """No network, the text cache under tmp_path, and a test-only frame size the CPU VAE decodes in seconds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(loaders.SIZES, TEST_SIZE, TEST_LATENT_HW)
    monkeypatch.setattr(loaders, "DEFAULT_SIZE", TEST_SIZE)


@pytest.fixture
def wan(tmp_path: Path) -> tuple[Path, Path]:
    """(Self-Forcing checkpoint, Wan folder), as `huggingface-cli download` lays them out."""
    return (write_self_forcing_pt(tmp_path / "checkpoints" / "self_forcing_dmd.pt", tiny_dit()),
            write_wan_dir(tmp_path / "wan_models" / "Wan2.1-T2V-1.3B"))


def test_generate_cli_writes_playable_mp4(wan: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, wan_dir = wan
    out = tmp_path / "out.mp4"
    args = ["generate", PROMPTS[0], "--checkpoint", str(checkpoint), "--wan-dir", str(wan_dir), "--seconds", "1",
            "-o", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    frames = np.stack(list(iter_frames(out)))
    # 1 s at 16 fps: ceil(16 / 4) = 4 latents, rounded up to 2 chunks of 3 = 6 latents -> 1 + 4 * 5 = 21 frames.
    assert frames.shape == (21, 32, 64, 3)
    assert probe_video(out).fps == 16
    assert frames.std() > 1  # the VAE's output, not a blank frame
    assert len(list((tmp_path / "xdg" / "relaxforcing" / "text").glob("*.safetensors"))) == 1

    written = out.stat().st_mtime_ns
    again = CliRunner().invoke(app, args)  # -o refuses to overwrite; --out-dir runs skip instead
    assert isinstance(again.exception, ValueError) and "already exists" in str(again.exception)
    assert out.stat().st_mtime_ns == written


def test_frame_counts_and_sizes(wan: tuple[Path, Path]) -> None:
    pipe = load_wan(*wan)
    assert isinstance(pipe, VideoPipeline) and pipe.latent_hw == TEST_LATENT_HW
    assert {p.dtype for p in pipe.model.parameters()} == {torch.float32}
    assert (pipe.latent_frames(60), pipe.video_frames(240)) == (240, 957)  # LongLive / Relax "60 s"
    assert (pipe.latent_frames(5), pipe.video_frames(21)) == (21, 81)  # Self-Forcing's default
    assert [pipe.latent_frames(s) for s in (0.25, 0.75, 1, 2.25)] == [3, 3, 6, 9]
    assert load_wan(*wan, size="832x480").latent_hw == (60, 104)
    assert load_wan(*wan, size="480x832").latent_hw == (104, 60)
    with pytest.raises(ValueError, match="size '640x480' is not supported"):
        load_wan(*wan, size="640x480")
    with pytest.raises(ValueError, match="must be a positive number"):
        pipe.latent_frames(0)


def test_compile_covers_the_dit_and_the_vae_decode(wan: tuple[Path, Path]) -> None:
    """``--compile`` compiles the DiT's chunk step and the Wan VAE's streaming decode; on CPU the default is
    neither."""
    eager = loaders.load_pipeline(*wan, device="cpu")
    assert not eager.model.compiled and not eager.codec.compiled
    compiled = loaders.load_pipeline(*wan, device="cpu", compile=True)
    assert compiled.model.compiled and compiled.codec.compiled


def test_prompts_encoded_up_front_with_one_encoder_load(wan: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch) -> None:
    loaded = track_encoder_loads(monkeypatch)
    pipe = load_wan(*wan, text_cache=tmp_path / "text")
    pipe.prepare([*PROMPTS, PROMPTS[0]])
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None  # one load for every prompt, freed before any DiT work
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 3

    context = pipe.encode_text([PROMPTS[2], PROMPTS[0]])
    assert len(loaded) == 1
    assert context.shape == (2, TINY_WAN.text_len, TINY_WAN.text_dim) and context.dtype == torch.float32
    assert context[0, :3].abs().sum(-1).all() and not context[0, 3:].any()  # "a dog" + EOS, then zeros

    pipe.encode_text(["a red dog"])  # not prepared: encoded on demand, encoder freed again
    gc.collect()
    assert len(loaded) == 2 and loaded[1]() is None
    assert len(load_wan(*wan, text_cache=tmp_path / "text").encode_text(PROMPTS).shape) == 3
    assert len(loaded) == 2  # a fresh pipeline reads the disk cache


@pytest.mark.parametrize("name", ["Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl"])
def test_missing_wan_file_is_named(wan: tuple[Path, Path], name: str) -> None:
    checkpoint, wan_dir = wan
    target = wan_dir / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ValueError, match=rf"^{target} is missing from the Wan folder {wan_dir}$"):
        load_wan(checkpoint, wan_dir)


def test_wan_dir_is_required(wan: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--wan-dir is needed"):
        load_wan(wan[0], None)
    with pytest.raises(ValueError, match="is not a folder"):
        load_wan(wan[0], tmp_path / "nowhere")
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_wan(tmp_path / "nope.pt", wan[1])


def test_config_json_sizes_the_checkpoint(wan: tuple[Path, Path]) -> None:
    """The tiny DiT has 16-wide heads, which the shapes alone cannot tell (they assume Wan's 128)."""
    checkpoint, wan_dir = wan
    (wan_dir / "config.json").unlink()
    with pytest.raises(ValueError, match="cannot infer the head count"):
        load_wan(checkpoint, wan_dir)


def first_video(pipe: VideoPipeline, latents: int = 3) -> np.ndarray:
    output = VideoOutput(pipe.codec.chunk_decoder())
    return np.concatenate([output(chunk) for chunk in pipe.session(PROMPTS[:1], [7], latents)], axis=1)


def test_diffusers_folder_gives_the_same_video(wan: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, wan_dir = wan
    diffusers_dir = write_diffusers_dir(tmp_path / "Wan2.1-T2V-1.3B-Diffusers", tiny_dit())
    original = first_video(load_wan(checkpoint, wan_dir))
    converted = first_video(load_wan(diffusers_dir / "transformer", diffusers_dir))
    assert original.shape == (1, 9, 32, 64, 3)
    assert np.abs(original.astype(int) - converted.astype(int)).max() <= 1  # uint8 rounding


def test_longlive_lora_is_merged(wan: tuple[Path, Path], tmp_path: Path) -> None:
    from test_checkpoints import peft_lora_model, save_longlive

    base = tiny_dit(seed=2)
    base_file, lora_file = save_longlive(tmp_path, base, peft_lora_model(base, rank=4, alpha=4))
    pipe = load_wan(base_file, wan[1], lora=lora_file)
    merged = load_dit(base_file, TINY_WAN, lora=lora_file)
    assert all(torch.equal(a, b) for a, b in zip(pipe.model.state_dict().values(), merged.state_dict().values(),
                                                 strict=True))
    assert not torch.equal(pipe.model.blocks[0].self_attn.q.weight, base.blocks[0].self_attn.q.weight)


@pytest.mark.parametrize("store_limit_gb", [1.0, 0.0])
def test_stop_and_resume_through_the_vae(wan: tuple[Path, Path], tmp_path: Path, store_limit_gb: float) -> None:
    """The Wan VAE's causal cache crosses a stop and resume, saved (small store) or rebuilt by decoding the saved
    latents again (large store: latents-only snapshot): the lossless video equals a straight run's."""
    from relaxforcing.resume import Snapshots
    from relaxforcing.runner import Stopped, generate_videos
    from relaxforcing.snapshot import load_snapshot

    pipe = load_wan(*wan)
    generate_videos(pipe, PROMPTS[:1], [7], 2, [tmp_path / "straight.mp4"], crf=0)
    polls = iter([None, "SIGTERM"])
    with pytest.raises(Stopped):
        generate_videos(pipe, PROMPTS[:1], [7], 2, [tmp_path / "r.mp4"], crf=0, stop_requested=lambda: next(polls),
                        snapshots=Snapshots(tmp_path / "state", every=0, store_limit_gb=store_limit_gb))
    saved = load_snapshot(tmp_path / "state")
    assert any(k.startswith("decoder.cache.") for k in saved.tensors) == (store_limit_gb > 0)
    generate_videos(load_wan(*wan), PROMPTS[:1], [7], 2, [tmp_path / "r.mp4"], crf=0, resume=saved)
    straight, resumed = (np.stack(list(iter_frames(tmp_path / n))) for n in ("straight.mp4", "r.mp4"))
    assert straight.shape == (1 + 4 * 8, 32, 64, 3) and np.array_equal(straight, resumed)  # 9 latents


def test_the_tiny_decoder_streams_the_same_frame_count(wan: tuple[Path, Path], tmp_path: Path) -> None:
    """`--decoder tae`: the TAEHV-layout preview decoder replaces the Wan VAE and gives Wan's 1 + 4(F - 1) frames."""
    from relaxforcing.loaders import with_decoder
    from relaxforcing.runner import generate_videos

    pipe = with_decoder(load_wan(*wan), "tae", public_tae_file(tmp_path))
    stats = generate_videos(pipe, PROMPTS[:1], [7], 0.75, [tmp_path / "tae.mp4"])
    frames = np.stack(list(iter_frames(tmp_path / "tae.mp4")))
    assert stats.video_frames == frames.shape[0] == 9 and frames.shape[1:3] == (32, 64)
    with pytest.raises(ValueError, match="--decoder-weights goes with --decoder tae"):
        with_decoder(pipe, "wan", tmp_path / "x")
