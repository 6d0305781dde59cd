"""The toy policy report: world metrics and the sink-collapse distance per policy and length, resumable."""

from __future__ import annotations

from relaxforcing.loaders import load_toy
from relaxforcing.toy_report import REPORTED, against, held_out_prompts, measure, table


def test_measure_reports_every_column_at_every_length_and_resumes(tmp_path):
    out = tmp_path / "rows.jsonl"
    pipe, prompt = load_toy(), held_out_prompts(1)[0]
    rows = measure(pipe, [prompt], ["relax", "infinity"], [1.0, 2.0], out)
    assert [(r["policy"], r["prompt"]) for r in rows] == [("relax", prompt), ("infinity", prompt)]
    for row in rows:
        for length in ("1.0", "2.0"):
            assert set(REPORTED) <= set(row["metrics"][length])
            assert 0 <= row["metrics"][length]["sink_distance_low"] < 2
    again = measure(pipe, [prompt], ["relax", "infinity"], [1.0, 2.0], out)
    assert again == rows and len(out.read_text().splitlines()) == 2  # nothing regenerated
    assert "| relax | 2 s | 1 |" in table(rows, [1.0, 2.0])
    assert {"sink_distance_low", "shape_accuracy"} <= set(table(rows, [1.0]).splitlines()[0].strip("| ").split(" | "))


def _row(policy: str, prompt: str, value: float) -> dict:
    return {"policy": policy, "prompt": prompt, "metrics": {"10": {"persistence": value, "freeze_rate": 0.1}}}


def test_against_marks_only_differences_larger_than_the_prompt_to_prompt_spread():
    base = [0.2, 0.5, 0.8, 0.4]  # a wide spread between prompts
    rows = [_row("relax", f"p{i}", v) for i, v in enumerate(base)]
    rows += [_row("dense", f"p{i}", v - 0.1) for i, v in enumerate(base)]  # always 0.1 lower: a real difference
    noise = [0.3, -0.3, 0.2, -0.1]
    rows += [_row("sink", f"p{i}", v + d) for i, (v, d) in enumerate(zip(base, noise, strict=True))]
    rows += [_row("infinity", "p0", 0.9)]  # one shared prompt: no spread to compare with
    lines = against(rows, [10], metrics=("persistence", "freeze_rate")).splitlines()
    assert lines[0] == "| policy - relax | length | n | persistence | freeze_rate |"
    assert lines[2] == "| dense | 10 s | 4 | **-0.100 ± 0.000** | +0.000 ± 0.000 |"
    assert lines[3].startswith("| sink | 10 s | 4 | +0.025 ± ") and "**" not in lines[3]
    assert lines[4] == "| infinity | 10 s | 1 | n/a | n/a |"
