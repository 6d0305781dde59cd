"""`relaxforcing bench` on the toy model: the numbers it reports are there and consistent with what it measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from relaxforcing.model.attention import auto_kernel

pytestmark = pytest.mark.e2e  # a CLI subprocess generating video


def test_bench_compares_store_placements_and_measures_twenty_minutes_in(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "relaxforcing", "bench", "--seconds", "4", "--policies", "relax",
                             "--offload", "none,history", "--late-seconds", "1200", "--json", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    resident, offloaded = report["results"]
    assert (resident["offload"], offloaded["offload"]) == ("none", "history")
    assert resident["store_host_gb"] == 0 and offloaded["store_host_gb"] > 0
    # relax keeps 2 sinks + 1 staged history + 1 tail of its 60 stored frames on the device
    assert offloaded["store_device_gb"] < resident["store_device_gb"] / 10
    assert offloaded["workspace_gb"] == 0 < resident["workspace_gb"]  # the device tier is the memory
    for run in (resident, offloaded):
        late = run["late"]
        assert late["seconds"] >= 1200 and late["frame"] == late["seconds"] * 16 / 4
        assert late["dit_ms_per_chunk"] > 0
    # the host ring holds every frame the resident store holds on the device (2 sinks + 58), no more at 20 minutes
    assert offloaded["late"]["store_host_gb"] == pytest.approx(resident["store_device_gb"], rel=0.01)
    assert "| relax | eager | toy | history | 4 s | 7 |" in result.stdout


def test_bench_compares_attention_kernels_side_by_side(tmp_path):
    """``--attention auto,math`` runs the policy once per kernel, the kernel named in the DiT column;
    ``--key-tokens`` also times both kernels alone at those key lengths, with their error against float32."""
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "relaxforcing", "bench", "--seconds", "2", "--policies", "relax",
                             "--attention", "auto,math", "--key-tokens", "16,96", "--json", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    runs = report["results"]
    assert [r["dit"] for r in runs] == ["eager", "eager, math attention"]
    assert all(r["self_attention_ms_per_chunk"] > 0 and r["e2e_fps"] > 0 for r in runs)
    # what `auto` resolves to is named: a FlashAttention package when one imports, else PyTorch's SDPA
    assert report["attention_auto"] == auto_kernel()
    assert f"attention (auto): {auto_kernel()}" in result.stdout
    # the table's "rest of DiT" column is the DiT's time beside self-attention
    for r in runs:
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"| relax | {r['dit']} |"))
        self_attn, dit, rest = (float(cell) for cell in row.split("|")[7:10])
        assert rest == pytest.approx(dit - self_attn, abs=0.11)
    sweep = report["kernel_sweep"]
    assert [(r["keys"], r["backend"]) for r in sweep] == [(16, "auto"), (16, "math"), (96, "auto"), (96, "math")]
    assert all(r["ms"] > 0 and r["error"] < 1e-5 and r["queries"] == sweep[0]["queries"] > 0 for r in sweep)
    table = result.stdout[result.stdout.index("attention kernels alone"):].splitlines()
    assert table[2] == "| keys | auto ms | math ms | auto speed-up over math | auto rel. L2 | math rel. L2 |"
    assert [row.split(" | ")[0] for row in table[4:]] == ["| 16", "| 96"]


@pytest.mark.parametrize(("value", "message"), [
    ("off,4by4", "error: --vae-tiles '4by4': choose auto, off, or HxW latent cells per tile"),
    ("off,8x8", "error: --vae-tiles 8x8 tiles the full Wan VAE; this pipeline decodes with ToyAutoencoder"),
])
def test_bench_vae_tiles_errors_are_one_line(value: str, message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "relaxforcing", "bench", "--seconds", "4", "--policies", "relax",
                             "--vae-tiles", value], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr


def test_idle_gaps_count_overlapping_work_once_and_rank_the_waits():
    from relaxforcing.bench.run import idle_gaps, idle_summary

    # the host begins at 0; work at 1-3 ms and 2-4 ms (two streams), then 7-8 ms: idle 0-1 and 4-7
    idle = idle_gaps([(7000, 8000), (1000, 3000), (2000, 4000)])
    assert idle["span_ms"] == 8 and idle["busy_ms"] == 4 and idle["idle_ms"] == 4
    assert idle["longest"] == [{"ms": 3, "at_ms": 4}, {"ms": 1, "at_ms": 0}]
    assert idle_summary(idle) == "; device idle 4.0 of 8.0 ms (longest: 3.0 ms at 4.0, 1.0 ms at 0.0)"
    assert idle_summary(None) == ""
