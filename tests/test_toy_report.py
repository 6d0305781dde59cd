"""The toy policy report: world metrics and the sink-collapse distance per policy and length, resumable."""

from __future__ import annotations

from relaxforcing.loaders import load_toy
from relaxforcing.toy_report import REPORTED, held_out_prompts, measure, table


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
