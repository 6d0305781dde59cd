"""The field's training-free memories (Deep Forcing, MemRoPE, Rolling Sink) against brute-force replays of the
authors' physical caches, and the compression's picks against scores recomputed from raw layer-0 keys."""

from __future__ import annotations

import pytest
import torch
from naive_memory import NaiveMemRoPE, NaiveStore
from test_memory import run

from relaxforcing.memory import build_policy
from relaxforcing.memory.policies.base import LayoutStore
from relaxforcing.memory.store import FrameStore
from relaxforcing.memory.view import MemoryView
from relaxforcing.sampling import ChunkSampler, StreamSession


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
    for name in ("dense", "sink", "longlive", "infinity", "relax", "memrope", "rollingsink"):
        view = build_policy(name).select(LayoutStore(300), 300)
        assert view.keep_tokens is None and view.memo is None


def memrope_cache(chunks: int, sink: int = 3, window: int = 12, f: int = 3) -> list[tuple[list, list[int]]]:
    """Replay MemRoPE's cache (``causal_model.py``, ``compression_method='ema'``) as a list of slot labels (a frame,
    or "long" / "short" for the EMA slots); per chunk, the labels it attends (positions = slot indices) and the
    frames folded into the EMA slots before it."""
    cache: list = []
    seen = []
    for c in range(0, chunks * f, f):
        folded: list[int] = []
        if len(cache) + f > window:  # rolling: pool the f frames after the EMA slots, shift the recent ones down
            folded = cache[sink + 2:sink + 2 + f]
            cache = cache[:sink] + ["long", "short"] + cache[sink + 2 + f:]
        seen.append((list(cache), folded))
        cache += list(range(c, c + f))
    return seen


@pytest.mark.parametrize("spec, sink, window", [("memrope", 3, 12), ("memrope:sink=2,window=15", 2, 15),
                                                ("memrope:sink=0,window=6", 0, 6)])
def test_memrope_matches_a_replay_of_the_authors_cache(spec, sink, window):
    policy = build_policy(spec)
    names = {-1: "long", -2: "short"}
    for chunk, (labels, folded) in enumerate(memrope_cache(60, sink, window)):
        start = 3 * chunk
        view = policy.select(LayoutStore(start), start)
        assert [names.get(f, f) for f in view.frames[0].tolist()] == labels
        assert view.positions[0].tolist() == list(range(len(labels)))
        assert view.query_positions.tolist() == list(range(len(labels), len(labels) + 3))
        assert [fold.frames[0].tolist() for fold in view.folds] == ([folded] * 2 if folded else [])
        read = [f for f in view.frames[0].tolist() + folded if f >= 0]
        assert all(f < policy.sink_frames or start - f <= policy.max_lag for f in read)


def test_memrope_defaults_and_steady_layout():
    policy = build_policy("memrope")
    assert (policy.sink, policy.window, policy.alpha_long, policy.alpha_short, policy.adaptive) == \
        (3, 12, 0.01, 0.1, False)
    assert policy.recent == 4 and policy.max_lag == 7 and policy.synthesised_frames == 2
    assert policy.steady_frames() == 9 and build_policy(policy.spec()) == policy
    view = policy.select(LayoutStore(300), 300)
    assert view.roles == ("sink",) * 3 + ("ema_long", "ema_short") + ("tail",) * 4
    assert [fold.frames[0].tolist() for fold in view.folds] == [[293, 294, 295]] * 2
    assert [(fold.rule.alpha, fold.rule.first) for fold in view.folds] == [(0.01, False), (0.1, False)]
    assert all(fold.rule.first for fold in policy.select(LayoutStore(12), 12).folds)


@pytest.mark.parametrize("spec, message", [("memrope:window=10", "multiple of the chunk size"),
                                           ("memrope:sink=8", "hold sink=8"), ("memrope:alpha_long=0", "in"),
                                           ("memrope:alpha_short=1.5", "must be in")])
def test_memrope_rejects_bad_parameters(spec, message):
    with pytest.raises(ValueError, match=message):
        build_policy(spec)


MEMROPE_SPECS = [("memrope", {}), ("memrope:adaptive=true", {"adaptive": True}),
                 ("memrope:sink=2,window=15,alpha_long=0.05,alpha_short=0.3",
                  {"sink": 2, "window": 15, "alpha_long": 0.05, "alpha_short": 0.3}),
                 ("memrope:sink=0,window=6,adaptive=true", {"sink": 0, "window": 6, "adaptive": True})]


@pytest.mark.parametrize("spec, rule", MEMROPE_SPECS)
def test_memrope_engine_matches_the_authors_cache(tiny_model, tiny_context, spec, rule):
    """Store + synthesised EMA frames + reader give, bit for bit, what a replay of the authors' physical cache
    (EMA in place, FIFO shift, positions 0..) gives, far past the warm-up, for a batch of two."""
    fast, fast_trace = run(tiny_model, tiny_context, spec, 60)
    naive, naive_trace = run(tiny_model, tiny_context, spec, 60, store=NaiveMemRoPE(2, 4, **rule))
    assert fast_trace == naive_trace
    assert torch.equal(fast, naive)


def test_memrope_trace_names_sinks_ema_slots_and_recent_frames(tiny_model, tiny_context):
    _, trace = run(tiny_model, tiny_context, "memrope", 45)
    for record in trace:
        t = record["start"]
        pairs = [(a["frame"], a["role"], a["position"]) for a in record["attended"]]
        if t < 12:
            assert [p[0] for p in pairs] == list(range(t + 3)) and [p[2] for p in pairs] == list(range(t + 3))
            continue
        assert pairs == [(0, "sink", 0), (1, "sink", 1), (2, "sink", 2), (-1, "ema_long", 3), (-2, "ema_short", 4),
                         *((t - 4 + i, "tail", 5 + i) for i in range(4)),
                         *((t + i, "current", 9 + i) for i in range(3))]
        assert record["attended"][3]["folded"] == record["attended"][4]["folded"] == [t - 7, t - 6, t - 5]


@pytest.mark.parametrize("with_store", [True, False])
def test_memrope_resumes_bit_for_bit(tiny_model, tiny_context, with_store):
    """A snapshot after the EMA slots have been folded into continues the stream exactly, whether it holds the store
    (synthesised frames included) or the clean latents to replay."""
    sampler = ChunkSampler(tiny_model, build_policy("memrope:adaptive=true"))
    whole = torch.cat([c.latents for c in StreamSession(sampler, tiny_context, [3, 4], (4, 4), 48)], dim=2)
    first = StreamSession(sampler, tiny_context, [3, 4], (4, 4), 48, record_latents=True)
    head = [first.next_chunk().latents for _ in range(9)]
    tensors, meta = first.state_tensors(with_store), first.state_meta()
    second = StreamSession(sampler, tiny_context, [3, 4], (4, 4), 48)
    if not with_store:
        second.replay(first.recorded_latents())
    second.restore(tensors, meta)
    assert torch.equal(torch.cat(head + [c.latents for c in second], dim=2), whole)


def test_token_subsets_are_gathered_not_masked():
    """A view keeping as many tokens in every sample attends just those (in frame order, no mask); unequal counts
    fall back to every token with a mask. The gathered keys/values are the masked read's kept rows."""
    store = FrameStore(num_layers=2, batch=2, tokens_per_frame=4, num_heads=2, head_dim=6, sink_frames=1,
                       ring_frames=5)
    generator = torch.Generator().manual_seed(0)
    store.commit(0, *([torch.randn(2, 6 * 4, 2, 6, generator=generator) for _ in range(2)] for _ in range(2)))
    frames = torch.tensor([[0, 2, 5], [0, 3, 5]])
    equal = torch.zeros(2, 3, 4, dtype=torch.bool)
    equal[0, 0], equal[0, 1, 1:3], equal[1, 0], equal[1, 2, [0, 3]] = True, True, True, True
    unequal = equal.clone()
    unequal[1, 1, 2] = True

    def read(keep: torch.Tensor):
        view = MemoryView(start=6, frames=frames, positions=frames + 1, roles=("sink", "history", "tail"),
                          query_positions=torch.arange(7, 10), keep_tokens=keep)
        return store.read(view, (2, 2), 6)

    gathered = read(equal)
    assert gathered.keep is None and gathered.keys.shape == (2, 2, 6, 2, 6)
    masked = read(unequal)
    assert masked.keys.shape == (2, 2, 12, 2, 6) and masked.keep.sum().item() == 13
    for b in range(2):
        rows = equal[b].flatten().nonzero()[:, 0]
        assert torch.equal(masked.keys[:, b, rows], gathered.keys[:, b])
        assert torch.equal(masked.values[:, b, rows], gathered.values[:, b])
