"""Prompt-parallel runs: two gloo ranks on CPU share the prompts, each writes its own share exactly once, a rerun
skips everything; init/finish start and end the process group and are no-ops in a single process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from relaxforcing import distributed
from relaxforcing.cli import slug

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

PROMPTS = [  # toy-world vocabulary (the default model's closed text encoder)
    "a small red circle",
    "a large blue square on a white background",
    "a yellow triangle and a green ring",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, size: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _share_jobs(rank: int, size: int, port: int, shares: dict) -> None:
    rank_env(rank, size, port)
    assert distributed.init() and distributed.init()  # idempotent
    assert dist.get_backend() == "gloo" and dist.get_world_size() == size
    gathered: list = [None] * size
    dist.all_gather_object(gathered, distributed.shard(list(range(7))))
    shares[rank] = gathered
    distributed.finish()
    assert not dist.is_initialized()


def _fail_inside(rank: int, size: int, port: int) -> None:
    rank_env(rank, size, port)
    with pytest.raises(KeyError), distributed.process_group() as up:
        assert up
        raise KeyError("boom")
    assert not dist.is_initialized()  # left without waiting at the barrier


def test_two_gloo_ranks_split_jobs_round_robin() -> None:
    with mp.Manager() as manager:
        shares = manager.dict()
        mp.spawn(_share_jobs, args=(2, free_port(), shares), nprocs=2)
        assert shares[0] == shares[1] == [[0, 2, 4, 6], [1, 3, 5]]


def test_process_group_leaves_without_barrier_on_error() -> None:
    mp.spawn(_fail_inside, args=(2, free_port()), nprocs=2)


def test_single_process_starts_no_group(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == (0, 1) and not distributed.init()
    distributed.finish()
    with distributed.process_group() as up:
        assert not up
    assert not dist.is_initialized() and distributed.shard([1, 2, 3]) == [1, 2, 3]


def torchrun_generate(tmp_path: Path, run: str) -> dict[int, str]:
    """`torchrun --nproc-per-node 2 -m relaxforcing generate ...` on the toy model; each rank's stdout + stderr."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    logs = tmp_path / f"logs-{run}"
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--log-dir", str(logs), "--redirects", "3", "-m", "relaxforcing", "generate", "--prompts",
               str(prompts), "--out-dir", str(tmp_path / "videos"), "--seconds", "0.75", "--device", "cpu"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    outputs = {rank: "".join(f.read_text() for f in sorted(logs.glob(f"*/attempt_0/{rank}/*.log")))
               for rank in (0, 1)}
    assert done.returncode == 0, f"{done.stderr[-2000:]}\n{outputs}"
    return outputs


def test_torchrun_generate_writes_each_prompt_once_and_resumes(tmp_path: Path) -> None:
    names = [f"{i:04d}_{slug(p)}_s42.mp4" for i, p in enumerate(PROMPTS)]
    first = torchrun_generate(tmp_path, "first")
    videos = tmp_path / "videos"
    assert sorted(p.name for p in videos.iterdir()) == names  # every prompt exactly once, nothing else
    assert all((videos / n).stat().st_size > 0 for n in names)
    for rank, mine in ((0, [names[0], names[2]]), (1, [names[1]])):  # round robin: rank r takes jobs r, r + 2, ...
        assert [n for n in names if f"wrote {videos / n}" in first[rank]] == mine

    written = {n: (videos / n).stat().st_mtime_ns for n in names}
    again = torchrun_generate(tmp_path, "again")
    assert {n: (videos / n).stat().st_mtime_ns for n in names} == written
    assert not any("wrote" in out for out in again.values())
    assert [n for n in names if f"skip {videos / n}" in again[0]] == [names[0], names[2]]
    assert [n for n in names if f"skip {videos / n}" in again[1]] == [names[1]]
