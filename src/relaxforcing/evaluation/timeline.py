"""Memory timeline plot from a generation trace: which source frame each chunk attended to, in which role.

Trace format: JSON lines, one per chunk per sample, e.g. ``{"chunk": 5, "start": 15, "sample": 0,
"attended": [{"frame": 0, "role": "sink", "position": 11}, ...], "candidates": [{"frame": 9, "score": 0.12}]}``;
``candidates`` appear only for policies that score history candidates (relax). A negative frame is a synthesised one
(MemRoPE's EMA slots: ``{"frame": -1, "role": "ema_long", "position": 3, "folded": [5, 6, 7]}``).
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROLE_COLOURS = {"sink": "tab:red", "history": "tab:purple", "tail": "tab:blue", "window": "tab:cyan",
                "ema_long": "tab:orange", "ema_short": "tab:olive", "current": "tab:green"}
"""Attended-frame roles and their colours."""


def read_trace(path: Path) -> list[dict]:
    """Parses and checks a trace file; blank lines are skipped."""
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            attended = [{**a, "frame": int(a["frame"]), "role": str(a["role"])} for a in record["attended"]]
            candidates = [{**c, "frame": int(c["frame"])} for c in record.get("candidates", [])]
            record |= {"chunk": int(record["chunk"]), "sample": int(record.get("sample", 0)),
                       "attended": attended, "candidates": candidates}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}:{number}: not a trace record ({err})") from err
        unknown = {a["role"] for a in attended} - ROLE_COLOURS.keys()
        if unknown:
            raise ValueError(f"{path}:{number}: unknown role(s) {sorted(unknown)}; known: {', '.join(ROLE_COLOURS)}")
        records.append(record)
    return records


def plot_memory_timeline(trace: Path, out_png: Path, sample: int = 0) -> Path:
    """Draws x = chunk index, y = source frame, one dot per attended frame coloured by role.

    History candidates (if traced) are hollow circles; the chosen one is the ``history`` dot inside its circle.
    """
    records = [r for r in read_trace(trace) if r["sample"] == sample]
    if not records:
        raise ValueError(f"trace {trace} has no records for sample {sample}")
    fig = Figure(figsize=(max(6.0, 0.12 * len(records)), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    candidates = [(r["chunk"], c["frame"]) for r in records for c in r["candidates"]]
    if candidates:
        xs, ys = zip(*candidates, strict=True)
        ax.scatter(xs, ys, s=40, facecolors="none", edgecolors="0.5", linewidths=0.8, label="candidate")
    for role, colour in ROLE_COLOURS.items():
        points = [(r["chunk"], a["frame"]) for r in records for a in r["attended"] if a["role"] == role]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=10, marker="s", color=colour, label=role)
    ax.set_xlabel("chunk index")
    ax.set_ylabel("source frame")
    ax.set_title(f"{trace.name} (sample {sample})")
    ax.legend(fontsize=8, loc="upper left")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png
