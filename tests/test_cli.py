"""The main command end to end on the embedded toy model, and its one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import av
import numpy as np
import pytest

from relaxforcing.loaders import load_toy
from relaxforcing.runner import generate_videos
from relaxforcing.video import VideoWriter

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

PROMPT = "a red circle and a blue square bouncing on a black background"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relaxforcing", *args], capture_output=True, text=True)


def test_network_is_blocked_in_tests():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_generate_writes_a_playable_mp4_and_trace(tmp_path):
    out, trace = tmp_path / "v.mp4", tmp_path / "t.jsonl"
    result = run_cli("generate", PROMPT, "--seconds", "3", "-o", str(out), "--trace", str(trace), "--seed", "5")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (256, 256)
    assert frames == 48  # 3 s at 16 fps = 12 latent frames = 4 chunks
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["chunk"] for r in records] == [0, 1, 2, 3]
    assert [a["role"] for a in records[-1]["attended"]] == ["sink", "sink", "history", "tail"] + ["current"] * 3


def test_generate_with_a_named_attention_kernel_makes_the_same_video(tmp_path):
    """``--attention math`` (PyTorch's reference kernel) gives the default kernel's video: float rounding moves a
    pixel by a few levels at most, through H.264's colour conversion."""
    videos = []
    for kernel in ("auto", "math"):
        out = tmp_path / f"{kernel}.mp4"
        result = run_cli("generate", PROMPT, "--seconds", "1.5", "-o", str(out), "--attention", kernel, "--crf", "0")
        assert result.returncode == 0, result.stderr
        with av.open(str(out)) as container:
            videos.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int))
    difference = np.abs(videos[0] - videos[1])
    assert videos[0].shape == videos[1].shape and difference.max() <= 4 and difference.mean() < 0.01


def test_generate_in_process_without_network(tmp_path):
    pipe = load_toy()
    stats = generate_videos(pipe, [PROMPT], [1], 1.5, [tmp_path / "a.mp4"], memory="infinity")
    assert stats.video_frames == 24 and stats.latent_frames == 6


def test_partial_video_stays_playable(tmp_path):
    """One fragment per frame, flushed as written: a copy taken mid-run (as after a crash) decodes to every frame
    but the newest, whose fragment is cut when the next frame arrives."""
    import numpy as np

    path = tmp_path / "p.mp4"
    writer = VideoWriter(path, fps=16)
    writer.write(np.random.default_rng(0).integers(0, 255, (40, 64, 64, 3), dtype=np.uint8))
    writer.flush()
    assert not path.exists() and writer.partial_path.exists()
    crashed = tmp_path / "crashed.mp4"
    crashed.write_bytes(writer.partial_path.read_bytes())
    writer.close()
    assert path.exists() and not writer.partial_path.exists()
    with av.open(str(crashed)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 39


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"user data")
    result = run_cli("generate", PROMPT, "-o", str(out), "--seconds", "1")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert out.read_bytes() == b"user data"


def test_cli_loads_without_the_optional_extras():
    """`generate`, `bench` and `eval` must not need the viewer (FastAPI) or the real-model stack (diffusers)."""
    code = ("import sys\n"
            "for name in ('fastapi', 'uvicorn', 'diffusers', 'transformers'): sys.modules[name] = None\n"
            "from relaxforcing.cli import app\n"
            "print(sorted(c.name or c.callback.__name__ for c in app.registered_commands))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "bench" in result.stdout and "serve" in result.stdout


def test_background_writer_makes_the_same_file_and_reports_errors(tmp_path):
    """Encoding on the writer's thread gives the very bytes the caller's thread gives; its errors reach the caller."""
    import numpy as np

    frames = np.random.default_rng(1).integers(0, 255, (3, 12, 32, 32, 3), dtype=np.uint8)
    for background in (False, True):
        with VideoWriter(tmp_path / f"{background}.mp4", background=background) as writer:
            for chunk in frames:
                writer.write(chunk)
    assert (tmp_path / "True.mp4").read_bytes() == (tmp_path / "False.mp4").read_bytes()

    writer = VideoWriter(tmp_path / "bad.mp4")
    writer._encode = lambda frames: (_ for _ in ()).throw(OSError(28, "no space left"))  # fails on its thread
    writer.write(frames[0])
    with pytest.raises(OSError, match="no space left"):
        writer.flush()
    with pytest.raises(OSError, match="no space left"):
        writer.write(frames[1])
    writer.close(complete=False)  # the error path never raises again
    assert not (tmp_path / "bad.mp4").exists()


def test_a_newcomers_free_text_prompt_works_and_says_what_it_drew(tmp_path):
    out = tmp_path / "free.mp4"
    result = run_cli("generate", "A green square and a red circle moving on a dark background!", "--seconds", "0.75",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert ('toy model: drawing "a green square and a red circle bouncing on a black background"'
            in result.stderr), result.stderr
    assert out.is_file()
