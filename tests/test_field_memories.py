"""The field's training-free memories (Deep Forcing, Rolling Sink) against brute-force replays of the authors'
physical caches, and the compression's picks against scores recomputed from raw layer-0 keys."""

from __future__ import annotations

import pytest
import torch
from naive_memory import NaiveStore
from test_memory import run

from relaxforcing.memory import build_policy
from relaxforcing.memory.policies.base import LayoutStore


def rolling_sink_cache(chunks: int, window: int = 21, f: int = 3) -> list[list[tuple[int, int]]]:
    """Replay Rolling Sink's cache as a list of (frame, position) slots; per chunk, what it attends (before its
    clean pass refills the previous slot)."""
    cache: list[tuple[int, int]] = []
    seen = []
    for c in range(0, chunks * f, f):
        cache = (cache + [(c + i, c + i) for i in range(f)])[-window:]  # roll, insert the chunk (roped at c)
        seen.append(cache[:-f])
        if c >= window:  # the clean pass overwrites the previous chunk's slot with first-window frames
            s, n = c - f, window - f
            right = n - s % n  # odd sweeps run backwards
            block = list(range(s % n, s % n + f)) if (s // n) % 2 == 0 else list(range(right - 1, right - 1 - f, -1))
            cache[-2 * f:-f] = [(frame, s + i) for i, frame in enumerate(block)]
    return seen


@pytest.mark.parametrize("window", [21, 9])
def test_rolling_sink_matches_a_replay_of_the_authors_cache(window):
    policy = build_policy(f"rollingsink:window={window}")
    for chunk, expected in enumerate(rolling_sink_cache(60, window)):
        view = policy.select(LayoutStore(3 * chunk), 3 * chunk)
        assert list(zip(view.frames[0].tolist(), view.positions[0].tolist(), strict=True)) == expected
        assert all(f < policy.sink_frames or 3 * chunk - f <= policy.max_lag for f, _ in expected)


def test_rolling_sink_sweeps_ping_pong():
    policy = build_policy("rollingsink")
    assert [policy.source(s)[0] for s in range(18, 72, 3)] == [17, 14, 11, 8, 5, 2, 0, 3, 6, 9, 12, 15, 17, 14, 11,
                                                                8, 5, 2]
    assert policy.source(18) == [17, 16, 15] and policy.source(36) == [0, 1, 2]
    assert policy.sink_frames == 18 and policy.max_lag == 3


def test_deep_sink_only_positions():
    """DS only (sink 14): sinks sit at t-21.., 3 positions empty, then the 4 previous frames at their own."""
    policy = build_policy("deep:compress=false,sink=14")
    for start in range(0, 120, 3):
        view = policy.select(LayoutStore(start), start)
        pairs = list(zip(view.frames[0].tolist(), view.positions[0].tolist(), strict=True))
        if start < 21:
            assert pairs == [(f, f) for f in range(start)]
        else:
            assert pairs == [(i, start - 21 + i) for i in range(14)] + [(f, f) for f in range(start - 4, start)]


def test_deep_compression_schedule_and_bounds():
    policy = build_policy("deep")
    assert (policy.sink, policy.window, policy.budget, policy.recent, policy.reuse) == (10, 21, 16, 4, 7)
    assert policy.first_roll == 21 and policy.period == 6 and policy.max_lag == 50
    assert list(policy.new_candidates(21)) == list(range(10, 20)) and list(policy.new_candidates(27)) == \
        list(range(20, 26))
    assert policy.last_compression(24) == 21 and policy.last_compression(27) == 27


def test_deep_picks_the_top_scored_tokens_and_counts_reuse(tiny_model, tiny_context):
    """Every compression keeps the top (budget-sink-recent) x T tokens among survivors (picked < reuse times) and
    the frames that left the recent window, scored from raw layer-0 keys; kept tokens sit at their own positions."""
    store = NaiveStore(2, 4)
    _, trace = run(tiny_model, tiny_context, "deep:reuse=2", 66, store=store)
    policy = build_policy("deep:reuse=2")
    tokens, top = 4, 2 * 4
    compressions = sorted(store.memos)
    assert compressions == list(range(21, 66, 6))
    for i, start in enumerate(compressions):
        memo = store.memos[start]
        previous = store.memos[compressions[i - 1]] if i else None
        probe = torch.arange(start - 4, start).repeat(2, 1)
        for b in range(2):
            pool = [(f, t, 0) for f in policy.new_candidates(start) for t in range(tokens)]
            if previous is not None:
                pool += [(f, t, c) for f, t, c in zip(previous["frames"][b].tolist(), previous["tokens"][b].tolist(),
                                                     previous["counts"][b].tolist(), strict=True) if c < 2]
            scores = {(f, t): float(store.token_scores(torch.tensor([[f], [f]]), probe)[b, 0, t]) for f, t, _ in pool}
            best = sorted(pool, key=lambda e: -scores[e[:2]])[:top]
            kept = sorted(zip(memo["frames"][b].tolist(), memo["tokens"][b].tolist(), memo["counts"][b].tolist(),
                              strict=True))
            assert kept == sorted((f, t, c + 1) for f, t, c in best)
            assert all(start - f <= policy.max_lag for f, _, _ in kept)
    for record in trace:
        attended = [a for a in record["attended"] if a["role"] == "history"]
        if record["start"] >= 21:
            assert sum(a.get("tokens", 0) for a in attended) == top
            assert all(a["position"] == a["frame"] for a in attended)
            sinks = [a["position"] for a in record["attended"] if a["role"] == "sink"]
            assert sinks == list(range(policy.last_compression(record["start"]) - 16,
                                       policy.last_compression(record["start"]) - 6))


def test_existing_views_carry_no_token_masks():
    for name in ("dense", "sink", "longlive", "infinity", "relax", "rollingsink"):
        view = build_policy(name).select(LayoutStore(300), 300)
        assert view.keep_tokens is None and view.memo is None
