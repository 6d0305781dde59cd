"""Long jobs that survive: snapshots, SIGKILL + --resume, SIGTERM/Ctrl-C, and bitwise-identical continuations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors import SafetensorError

from relaxforcing import snapshot as snapshot_module
from relaxforcing.loaders import load_toy
from relaxforcing.memory import build_policy
from relaxforcing.resume import Snapshots
from relaxforcing.runner import Stopped, generate_videos
from relaxforcing.sampling import ChunkSampler, StreamSession
from relaxforcing.snapshot import load_snapshot, save_snapshot

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

PROMPT = "a red circle and a blue square bouncing on a black background"
OTHER = "a small green triangle on a white background"
SECONDS = "9"  # 12 chunks of the toy model: still running when killed


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "relaxforcing", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def generate_args(out: str, trace: str) -> list[str]:
    return ["generate", PROMPT, "--seconds", SECONDS, "-o", out, "--trace", trace, "--seed", "4", "--crf", "0"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run (lossless mp4 + trace) to compare resumed runs with."""
    folder = tmp_path_factory.mktemp("reference")
    proc = cli(*generate_args("full.mp4", "full.jsonl"), cwd=folder)
    assert proc.wait() == 0, proc.stderr.read()
    return folder


def wait_for_snapshot(folder: Path, chunk: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    state = folder / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if json.loads(state.read_text())["chunk_index"] >= chunk:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"no snapshot of chunk {chunk}")


def assert_same_as_reference(folder: Path, reference: Path) -> None:
    assert not (folder / "r.part.mp4").exists()
    assert np.array_equal(decoded(folder / "r.mp4"), decoded(reference / "full.mp4"))
    assert (folder / "r.jsonl").read_bytes() == (reference / "full.jsonl").read_bytes()


@pytest.mark.parametrize("extra_delay", [0.0, 0.15, 0.4])
def test_sigkill_at_any_point_then_resume_gives_the_same_video(tmp_path, reference, extra_delay):
    """Killed with SIGKILL after a snapshot (and a little later: mid-chunk or mid-snapshot), then resumed: the
    decoded frames of the lossless mp4 and the trace equal an uninterrupted run's, bit for bit."""
    proc = cli(*generate_args("r.mp4", "r.jsonl"), "--state", "st", "--snapshot-every", "1", cwd=tmp_path)
    wait_for_snapshot(tmp_path / "st", 2, proc)
    time.sleep(extra_delay)
    proc.kill()
    proc.wait()
    assert (tmp_path / "r.part.mp4").exists() and not (tmp_path / "r.mp4").exists()
    resumed = cli("generate", "--resume", "st", cwd=tmp_path)
    assert resumed.wait() == 0, resumed.stderr.read()
    assert_same_as_reference(tmp_path, reference)
    assert not (tmp_path / "st").exists()  # a finished run leaves no state behind


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_chunk_saves_state_and_names_the_resume_command(tmp_path, reference, sig):
    proc = cli(*generate_args("r.mp4", "r.jsonl"), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "r.part.mp4").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(sig)
    assert proc.wait() == 128 + sig
    last = proc.stderr.read().strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and "relaxforcing generate --resume r.state" in last
    saved = load_snapshot(tmp_path / "r.state")
    frames_on_disk = len(decoded(tmp_path / "r.part.mp4"))  # finalised: it plays
    assert frames_on_disk == saved.meta["frames_written"][0] == 12 * saved.meta["chunk_index"]

    fresh = cli(*generate_args("r.mp4", "r.jsonl"), cwd=tmp_path)  # a plain rerun must not clobber the work
    assert fresh.wait() == 2 and "--resume" in fresh.stderr.read()
    resumed = cli("generate", "--resume", "r.state", cwd=tmp_path)
    assert resumed.wait() == 0, resumed.stderr.read()
    assert_same_as_reference(tmp_path, reference)


def test_resume_refuses_new_settings(tmp_path):
    proc = cli("generate", "--resume", "nowhere", "--seconds", "3", cwd=tmp_path)
    assert proc.wait() == 2
    assert proc.stderr.read().strip() == "error: --resume continues with the saved settings; drop --seconds"
    missing = cli("generate", "--resume", "nowhere", cwd=tmp_path)
    assert missing.wait() == 2 and "no saved generation in nowhere" in missing.stderr.read()


@pytest.mark.parametrize("store_limit_gb", [1.0, 0.0])
def test_in_process_stop_and_resume_of_a_batch(tmp_path, store_limit_gb):
    """Two samples with their own seeds, stopped after chunk 3 and resumed in a new pipeline: same frames, whether
    the snapshot holds the frame store or only the clean latents (the store is then rebuilt by replay)."""
    outputs = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    reference = [tmp_path / "ref_a.mp4", tmp_path / "ref_b.mp4"]
    pipe = load_toy()
    generate_videos(pipe, [PROMPT, OTHER], [1, 2], 4.5, reference, memory="relax:lambda=1.5", crf=0)
    polls = iter([None, None, "SIGINT"])
    snapshots = Snapshots(tmp_path / "state", every=0, store_limit_gb=store_limit_gb)
    with pytest.raises(Stopped, match="after chunk 3 of 6") as stopped:
        generate_videos(pipe, [PROMPT, OTHER], [1, 2], 4.5, outputs, memory="relax:lambda=1.5", crf=0,
                        snapshots=snapshots, stop_requested=lambda: next(polls))
    assert stopped.value.partial_videos == [tmp_path / "a.part.mp4", tmp_path / "b.part.mp4"]

    saved = load_snapshot(tmp_path / "state")
    replayed = store_limit_gb == 0
    assert ("stream.store.k" in saved.tensors) != replayed and ("latents" in saved.tensors) == replayed
    if replayed:
        assert saved.tensors["latents"].shape == (2, 16, 9, 16, 16)  # 3 chunks of 3 latent frames
    with pytest.raises(ValueError, match="another job: its seeds"):
        generate_videos(load_toy(), [PROMPT, OTHER], [1, 3], 4.5, outputs, memory="relax:lambda=1.5", crf=0,
                        resume=saved)
    generate_videos(load_toy(), [PROMPT, OTHER], [1, 2], 4.5, outputs, memory="relax:lambda=1.5", crf=0, resume=saved)
    for out, ref in zip(outputs, reference, strict=True):
        assert np.array_equal(decoded(out), decoded(ref))


def test_a_snapshot_cut_short_leaves_the_previous_one(tmp_path, monkeypatch):
    save_snapshot(tmp_path, {"chunk_index": 1, "note": "first"}, {"x": torch.zeros(3)})
    real_replace = os.replace

    def crash_on_commit(src, dst):
        if Path(dst).name == snapshot_module.STATE_FILE:
            raise KeyboardInterrupt  # killed between the tensor file and the commit
        real_replace(src, dst)

    monkeypatch.setattr(snapshot_module.os, "replace", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        save_snapshot(tmp_path, {"chunk_index": 2, "note": "second"}, {"x": torch.ones(3)})
    monkeypatch.setattr(snapshot_module.os, "replace", real_replace)
    kept = load_snapshot(tmp_path)
    assert kept.meta["note"] == "first" and torch.equal(kept.tensors["x"], torch.zeros(3))


@pytest.mark.parametrize("failing", ["save_file", "_fsync"])
def test_a_snapshot_that_cannot_be_written_is_one_error_and_leaves_the_previous_one(tmp_path, monkeypatch, failing):
    save_snapshot(tmp_path, {"chunk_index": 1, "note": "first"}, {"x": torch.zeros(3)})
    before = sorted(p.name for p in tmp_path.iterdir())

    def disk_full(*args, **kwargs):
        if failing == "save_file":
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot_module, failing, disk_full)
    with pytest.raises(OSError, match=rf"cannot save the generation state in {tmp_path} \(.*No space left on device"):
        save_snapshot(tmp_path, {"chunk_index": 2, "note": "second"}, {"x": torch.ones(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no half-written files left behind
    assert load_snapshot(tmp_path).meta["note"] == "first"


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "state.json").write_text("{not json"), "is corrupt"),
    (lambda d: (d / "state.json").write_text('{"format": "something else"}'), "not a relaxforcing generation state"),
    (lambda d: next(d.glob("state-*.safetensors")).write_bytes(b"\x00" * 20), "unreadable (truncated or corrupt?)"),
    (lambda d: next(d.glob("state-*.safetensors")).unlink(), "which is missing"),
])
def test_damaged_state_gets_one_line_error(tmp_path, damage, message):
    save_snapshot(tmp_path / "st", {"chunk_index": 1, "run": {}}, {"x": torch.zeros(3)})
    damage(tmp_path / "st")
    proc = cli("generate", "--resume", "st", cwd=tmp_path)
    assert proc.wait() == 2
    lines = proc.stderr.read().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("spec", ["relax", "dense", "longlive", "infinity"])
def test_replay_rebuilds_the_store_bit_for_bit(tiny_model, tiny_context, spec):
    """Re-running the clean passes over the saved clean latents refills the store exactly as generation did."""
    sampler = ChunkSampler(tiny_model, build_policy(spec, tiny_model.config.chunk_frames))
    made = StreamSession(sampler, tiny_context, [0, 1], (4, 4), 27, record_latents=True)
    chunks = [c.latents for c in made]
    assert made.store.num_frames == 24  # the last chunk is never committed: replay the 8 committed ones
    assert torch.equal(made.recorded_latents(), torch.cat(chunks[:-1], dim=2))
    rebuilt = StreamSession(sampler, tiny_context, [0, 1], (4, 4), 27)
    rebuilt.replay(made.recorded_latents())
    assert rebuilt.store.state_meta() == made.store.state_meta()
    for name, buffer in made.store.state_tensors().items():
        assert torch.equal(rebuilt.store.state_tensors()[name], buffer), name
