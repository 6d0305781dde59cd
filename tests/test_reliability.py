"""Bad input and bad luck: one-line errors from the real CLI, NaN latents, disk full, unwritable outputs, and
work that must never be overwritten. (Resume and interrupts: test_resume.py.)"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from safetensors.torch import save_file
from wan_fixtures import tiny_dit, write_self_forcing_pt, write_wan_dir

from relaxforcing.loaders import load_toy
from relaxforcing.runner import generate_videos

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

PROMPT = "a red circle and a blue square bouncing on a black background"


def run_cli(*args: str, cwd: Path, preexec=None) -> subprocess.CompletedProcess:
    env_offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "XDG_CACHE_HOME": str(cwd / "xdg")}
    return subprocess.run([sys.executable, "-m", "relaxforcing", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env_offline}, preexec_fn=preexec)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "long.txt").write_text("a red circle " * 200)
    (tmp_path / "prompts.txt").write_text("a red circle\n")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["generate", PROMPT, "--memory", "bogus"], "unknown memory policy 'bogus'"),
    (["generate", PROMPT, "--memory", "relax:sink=x"], "not a valid int"),
    (["generate", PROMPT, "--attention", "fast"], "--attention 'fast': choose auto, flash, cudnn, efficient, math"),
    (["generate", "a red dragon", "--seconds", "1"], "'a red dragon' names nothing the toy model can draw"),
    (["generate", "   "], "the prompt is empty"),
    (["generate"], "give exactly one of PROMPT or --prompts"),
    (["generate", "--prompts", "missing.txt"], "prompt file missing.txt does not exist"),
    (["generate", PROMPT, "--seconds", "0"], "--seconds must be a positive number, got 0.0"),
    (["generate", PROMPT, "--seconds", "inf"], "--seconds must be a positive number, got inf"),
    (["generate", PROMPT, "--seconds", "abc"], "Invalid value for '--seconds'"),
    (["generate", PROMPT, "--bogus"], "No such option: --bogus (see "),
    (["generate", PROMPT, "--memory", "relax:foo=1"], "relax: unknown parameter 'foo'"),
    (["generate", PROMPT, "--memory", "relax:sink=0"], "must be >= 1"),
    (["generate", PROMPT, "--seed", "99999999999999999999"], "--seed must be in 0..2**63-1"),
    (["generate", "--prompts", "binary.txt"], "prompt file binary.txt is not UTF-8 text"),
    (["generate", "--prompts", "long.txt"], "the limit is 2000"),
    (["generate", PROMPT, "--seed", "1", "--seed", "2", "-o", "v.mp4"], "--output names one file but there are 2"),
    (["generate", PROMPT, "--size", "832x480"], "not supported by the embedded toy model"),
    (["generate", PROMPT, "--crf", "99"], "--crf must be in 0..51"),
    (["generate", PROMPT, "--batch-size", "0"], "--batch-size must be >= 1"),
    (["generate", PROMPT, "--snapshot-every", "0"], "--snapshot-every must be >= 1"),
    (["generate", PROMPT, "--trace", "nowhere/t.jsonl"], "--trace: folder nowhere does not exist"),
    (["generate", PROMPT, "--out-dir", "a_file", "--seed", "1", "--seed", "2"], "a_file is a file, not a folder"),
    (["generate", PROMPT, "--state", "a_file"], "--state a_file is a file, not a folder"),
    (["generate", PROMPT, "-o", "/proc/v.mp4"], "cannot write into /proc"),
    (["generate", PROMPT, "-o", "/nonexistent/dir/v.mp4"], "output folder /nonexistent/dir does not exist"),
    (["generate", PROMPT, "-o", "video.avi"], "must end in .mp4"),
    (["generate", PROMPT, "--checkpoint", "/nonexistent.pt", "--wan-dir", "/nonexistent-wan"], "nonexistent"),
    (["generate", PROMPT, "--device", "cuda:0"], "CUDA is not available"),
    (["generate", PROMPT, "--device", "tpu"], "unknown device 'tpu'"),
    (["generate", PROMPT, "--lora", "x.pt"], "--wan-dir and --lora need --checkpoint"),
    (["eval", "missing.mp4"], "Missing option '--out'"),
    (["bench", "--model", "wan9"], "unknown model preset 'wan9'"),
    (["serve", "--port", "99999"], "--port=99999 must be in 1..65535"),
    (["train-toy", "--steps", "0"], "must be positive"),
    (["train-toy", "--export", "a_file"], "--export a_file is a file, not a folder"),
    (["train-toy", "--image-start", "2"], "--image-start is a share of clips, from 0 to 1; got 2.0"),
    (["bench", "--policies", " , "], "--policies names no memory policy"),
    (["bench", "--policies", "relax,bogus"], "unknown memory policy 'bogus'"),
    (["bench", "--long-seconds", "0"], "--long-seconds must be a positive number"),
    (["bench", "--offload", "none,gpu"], "--offload 'gpu': choose auto, none, history, all"),
    (["bench", "--cuda-graphs", "maybe"], "--cuda-graphs 'maybe': choose on, off or on,off"),
    (["bench", "--vae-compile", "fast"], "--vae-compile 'fast': choose off, on or off,on"),
    (["bench", "--attention", "fast"], "--attention 'fast': choose auto, flash, cudnn, efficient, math"),
    (["bench", "--key-tokens", "512,lots"], "--key-tokens '512,lots': give whole numbers of keys"),
    (["bench", "--key-tokens", "512,0"], "--key-tokens '512,0': key lengths must be positive"),
    (["sweep", "--prompts", "prompts.txt", "--out", "s", "--model", "wan9"], "unknown model preset 'wan9'"),
    (["sweep", "--prompts", "prompts.txt", "--out", "s", "--model", "wan2.1-t2v-1.3b", "--checkpoint", "x.pt"],
     "--model wan2.1-t2v-1.3b runs random weights"),
    (["bench", "--decoder", "wan,tae"], "--decoder tae decodes Wan 2.1 latents"),
    (["generate", PROMPT, "--offload", "disk"], "--offload 'disk': choose auto, none, history, all"),
    (["serve", "--decoder", "tae"], "decodes Wan 2.1 latents; the embedded toy model has its own codec"),
    (["serve", "--vae-tiles", "big"], "--vae-tiles 'big': choose auto, off, or HxW"),
    (["generate", PROMPT, "--memory", "relax:lambda=nan"], "lambda='nan' is not a valid finite float"),
])
def test_bad_input_gets_one_line_error(files: Path, args: list[str], message: str) -> None:
    assert_one_line_error(run_cli(*args, cwd=files), message)


def test_serve_on_a_taken_port_fails_before_loading(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), cwd=tmp_path)
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}: Address already in use")
    assert "viewer" not in result.stdout  # it stopped before loading the model and announcing itself


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    assert_one_line_error(run_cli("generate", PROMPT, "-o", "ro/v.mp4", cwd=tmp_path), "cannot write into ro")


@pytest.fixture(scope="module")
def wan(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wan")
    return write_self_forcing_pt(root / "dit.pt", tiny_dit()), write_wan_dir(root / "Wan2.1-T2V-1.3B")


def truncated(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def nan_weights(path: Path, out: Path) -> Path:
    state = tiny_dit().state_dict()
    state["blocks.0.self_attn.q.weight"][0, 0] = float("nan")
    save_file(state, out)
    return out


def another_model(path: Path, out: Path) -> Path:
    save_file({"decoder.conv1.weight": torch.zeros(4, 4, 3, 3, 3)}, out)
    return out


@pytest.mark.parametrize("damage, message", [
    (truncated, "unreadable torch pickle (truncated or corrupt?)"),
    (nan_weights, "holds NaN or Inf values in 1 tensors: blocks.0.self_attn.q.weight"),
    (another_model, "does not fit WanConfig(dim=32"),
])
def test_bad_checkpoint_gets_one_line_error(wan: tuple[Path, Path], tmp_path: Path, damage, message: str) -> None:
    checkpoint, wan_dir = wan
    bad = damage(checkpoint, tmp_path / ("bad.pt" if damage is truncated else "bad.safetensors"))
    result = run_cli("generate", PROMPT, "--checkpoint", str(bad), "--wan-dir", str(wan_dir), "--device", "cpu",
                     cwd=tmp_path)
    assert_one_line_error(result, message)


def test_unsupported_wan_size(wan: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, wan_dir = wan
    result = run_cli("generate", PROMPT, "--checkpoint", str(checkpoint), "--wan-dir", str(wan_dir), "--size",
                     "1280x720", cwd=tmp_path)
    assert_one_line_error(result, "size '1280x720' is not supported; choose one of 832x480, 480x832")


def test_non_finite_latents_stop_generation_and_keep_the_video(tmp_path: Path, nan_from_chunk) -> None:
    """A model that turns to NaN in chunk 2 is stopped there, named, and the first chunks stay playable."""
    pipe = load_toy()
    nan_from_chunk(pipe, 2)  # chunks 0 and 1 succeed
    with pytest.raises(FloatingPointError, match=r"non-finite latents in chunk 2 \(frames 6\.\.8\); generation "
                                                 "stopped"):
        generate_videos(pipe, [PROMPT], [0], 3, [tmp_path / "v.mp4"])
    assert not (tmp_path / "v.mp4").exists()
    with av.open(str(tmp_path / "v.part.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24  # 2 chunks x 12 frames, finalised on the way out


def limit_file_size(limit: int = 300_000) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_disk_full_keeps_a_playable_partial_video(tmp_path: Path) -> None:
    """Writes fail part-way (a 300 kB file-size limit stands in for a full disk): one-line error, and every byte
    left in the partial file decodes."""
    result = run_cli("generate", PROMPT, "--seconds", "30", "-o", "v.mp4", cwd=tmp_path, preexec=limit_file_size)
    assert_one_line_error(result, "disk full (or over the file size limit) writing v.part.mp4; its first")
    kept = int(result.stderr.split("its first ")[1].split()[0])
    with av.open(str(tmp_path / "v.part.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == kept > 16


def test_disk_full_while_saving_the_state_keeps_the_video_and_says_so(tmp_path: Path) -> None:
    """The snapshot (47 MB) cannot be written under a 3 MB file-size limit: one line, the video so far plays, and
    the state folder holds no half-written file."""
    result = run_cli("generate", PROMPT, "--seconds", "9", "-o", "v.mp4", "--state", "st", "--snapshot-every", "2",
                     cwd=tmp_path, preexec=lambda: limit_file_size(3_000_000))
    assert_one_line_error(result, "cannot save the generation state in st (")
    assert "File too large" in result.stderr and "the state saved before, if any, is kept" in result.stderr
    with av.open(str(tmp_path / "v.part.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24  # the two chunks made before the first snapshot
    assert list((tmp_path / "st").iterdir()) == []


def test_unfinished_video_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "v.part.mp4").write_bytes(b"an interrupted video")
    result = run_cli("generate", PROMPT, "--seconds", "1", "-o", "v.mp4", cwd=tmp_path)
    assert_one_line_error(result, "v.part.mp4 is left from an interrupted run")
    assert (tmp_path / "v.part.mp4").read_bytes() == b"an interrupted video"


def test_source_loads_only_safe_formats() -> None:
    """Every torch.load in the package passes weights_only=True; no raw unpickling, no remote code."""
    source = Path(__file__).resolve().parents[1] / "src" / "relaxforcing"
    loads = trusts = 0
    for file in source.rglob("*.py"):
        text = file.read_text()
        for call in text.split("torch.load(")[1:]:
            loads += 1
            assert "weights_only=True" in call.split("\n")[0], f"{file.name}: torch.load without weights_only=True"
        trusts += text.count("trust_remote_code")
        assert "pickle.load" not in text and "weights_only=False" not in text, file.name
    assert loads >= 3 and trusts == 0
