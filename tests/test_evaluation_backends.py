"""Weight backends load from local paths (stub models), the toy-world hook, and the memory timeline plot."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from relaxforcing.evaluation import (
    evaluate_videos,
    plot_memory_timeline,
    read_trace,
    resolve_backends,
    suite,
    write_video,
)
from relaxforcing.evaluation.synthetic import moving_shapes


class ConstantFlow(torch.nn.Module):
    """RAFT stand-in: (flow_low, flow_up) with every pixel moving 10 px right."""

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = torch.zeros(1, 2, image1.shape[2], image1.shape[3])
        flow[:, 0] = 10.0
        return flow[:, :, ::8, ::8], flow


class Blend(torch.nn.Module):
    """AMT stand-in: the average of its two inputs."""

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: torch.Tensor) -> torch.Tensor:
        return img0 * (1 - embt) + img1 * embt


class MeanQuality(torch.nn.Module):
    """MUSIQ stand-in: 100 x mean intensity."""

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.mean() * 100


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "shapes.mp4"
    write_video(path, moving_shapes(36, 60, 90, 2), 16)  # 60x90: RAFT pads to 64x96, AMT to 64x96
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_program_backends_run_from_local_paths(video: Path, tmp_path: Path) -> None:
    weights = {"raft": tmp_path / "raft.pt2"}
    torch.export.save(torch.export.export(ConstantFlow(), (torch.zeros(1, 3, 64, 96),) * 2), str(weights["raft"]))
    for key, module in [("amt", Blend()), ("musiq", MeanQuality())]:
        weights[key] = tmp_path / f"{key}.pt"
        torch.jit.save(torch.jit.script(module), str(weights[key]))
    backends = {"dynamic_degree": ["raft"], "motion_smoothness": ["amt"], "imaging_quality": ["musiq"],
                "subject_consistency": [], "background_consistency": [], "aesthetic_quality": []}
    metrics = evaluate_videos([video], backends, weights)["videos"][0]["metrics"]
    assert metrics["dynamic_degree[raft]"]["score"] == 1.0
    assert metrics["dynamic_degree[raft]"]["pair_top5_px"][0][0] == pytest.approx(10.0)
    assert 0.9 < metrics["motion_smoothness[amt]"]["score"] < 1.0
    assert 0.0 < metrics["imaging_quality[musiq]"]["score"] < 1.0
    assert "dynamic_degree[dis]" not in metrics


def test_hugging_face_backend_loads_a_local_directory(video: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, image_size=224, patch_size=16)
    transformers.ViTModel(config).save_pretrained(tmp_path / "dino")
    resolved = resolve_backends({"subject_consistency": ["dino"]}, {"dino": tmp_path / "dino"})
    features = resolved["subject_consistency[dino]"].impl(np.zeros((2, 60, 90, 3), np.uint8))
    assert features.shape == (2, 32)


def test_world_hook_reports_missing_module_then_calls_it(video: Path, monkeypatch) -> None:
    sidecar = video.with_suffix(".world.json")
    assert suite.world_metrics_hook(video) is None
    sidecar.write_text(json.dumps({"seed": 3}))
    try:
        monkeypatch.setattr(suite, "WORLD_METRICS_MODULE", "relaxforcing_no_such_module.metrics")
        assert suite.world_metrics_hook(video)["status"] == "missing"

        fake = types.ModuleType("fake_world_metrics")
        fake.__spec__ = importlib.machinery.ModuleSpec("fake_world_metrics", None)
        fake.world_metrics = lambda frames, world, fps: {"frames": len(frames), "seed": world["seed"], "fps": fps}
        monkeypatch.setitem(sys.modules, "fake_world_metrics", fake)
        monkeypatch.setattr(suite, "WORLD_METRICS_MODULE", "fake_world_metrics")
        entry = suite.world_metrics_hook(video)
        assert entry["status"] == "ok" and entry["metrics"] == {"frames": 36, "seed": 3, "fps": 16.0}
    finally:
        sidecar.unlink()


def _record(chunk: int, sample: int = 0) -> dict:
    start = 3 * chunk
    attended = [{"frame": 0, "role": "sink", "position": 0}, {"frame": max(0, start - 5), "role": "history",
                                                              "position": start - 4}]
    attended += [{"frame": start - 1, "role": "tail", "position": start - 1}]
    attended += [{"frame": start + i, "role": "current", "position": start + i} for i in range(3)]
    candidates = [{"frame": max(0, start - k), "score": 0.1 * k} for k in (5, 8, 11, 14)]
    return {"chunk": chunk, "start": start, "sample": sample, "attended": attended, "candidates": candidates}


def test_memory_timeline_plot(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(_record(c, s)) for c in range(1, 12) for s in (0, 1)) + "\n")
    assert len(read_trace(trace)) == 22
    out = plot_memory_timeline(trace, tmp_path / "timeline.png", sample=1)
    assert out.stat().st_size > 0
    with pytest.raises(ValueError, match="no records for sample 7"):
        plot_memory_timeline(trace, tmp_path / "x.png", sample=7)


def test_trace_errors_name_the_line(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    bad_role = _record(1) | {"attended": [{"frame": 0, "role": "anchor", "position": 0}]}
    trace.write_text(json.dumps(_record(0)) + "\n" + json.dumps(bad_role) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: unknown role\(s\) \['anchor'\]"):
        read_trace(trace)
    trace.write_text('{"chunk": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not a trace record"):
        read_trace(trace)
