"""Frame store and memory policies: the paper's rules, parity with a naive reference, flat memory, errors."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref

import pytest
import torch
from naive_memory import NaiveStore

from relaxforcing.memory import build_policy
from relaxforcing.sampling import ChunkSampler, StreamSession

ALL_SPECS = ["dense", "dense:window=6", "sink", "sink:sink=2,tail=4", "longlive", "longlive:relative_rope=true",
             "infinity", "relax", "relax:reservoir=24", "relax:reservoir=21,hist=2,tail=2,candidates=3",
             "relax:contiguous_rope=true,reservoir=30", "deep", "deep:compress=false,sink=14",
             "deep:sink=4,window=12,budget=9,recent=3,reuse=2", "rollingsink", "rollingsink:window=9"]


def run(model, context, spec: str, frames: int, store=None, seeds=(3, 4)):
    sampler = ChunkSampler(model, build_policy(spec))
    chunks = list(StreamSession(sampler, context, list(seeds), (4, 4), frames, store=store))
    trace = [record for c in chunks for record in c.trace]
    return torch.cat([c.latents for c in chunks], dim=2), trace


@pytest.mark.parametrize(
    "start, slots",
    [(6, [3]), (9, [5, 6]), (12, [6, 7, 8, 9]), (60, [30, 37, 44, 51]), (117, [59, 73, 87, 101]),
     (300, [59, 73, 87, 101])],
)
def test_relax_candidates_follow_the_papers_rule(start, slots):
    policy = build_policy("relax")
    assert policy.candidate_slots(start) == slots
    local = min(start, 117)
    assert policy.candidate_frames(start) == [start - local + s for s in slots]


def test_relax_defaults_and_bounds():
    policy = build_policy("relax")
    assert (policy.sink, policy.hist, policy.tail, policy.candidates) == (2, 1, 1, 4)
    assert policy.lambda_redundancy == 2.0 and policy.reservoir == 120 and not policy.contiguous_rope
    assert policy.max_lag == 58  # sinks + 58-frame ring instead of the authors' 120-frame buffer
    assert build_policy("dense").max_lag == 18 and build_policy("longlive").max_lag == 6
    assert build_policy("sink").max_lag == 15 and build_policy("infinity").max_lag == 1


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_engine_store_matches_naive_reference(tiny_model, tiny_context, spec):
    """The ring store (eviction, slots, cached rotation) gives exactly what a keep-everything cat/slice gives."""
    fast, fast_trace = run(tiny_model, tiny_context, spec, 42)
    naive, naive_trace = run(tiny_model, tiny_context, spec, 42, store=NaiveStore(2, 4))
    assert [{**r, "candidates": None} for r in fast_trace] == [{**r, "candidates": None} for r in naive_trace]
    scores = lambda trace: [c["score"] for r in trace for c in r.get("candidates", [])]  # noqa: E731
    assert scores(fast_trace) == pytest.approx(scores(naive_trace), abs=1e-5)
    assert torch.allclose(fast, naive, atol=1e-6, rtol=0)


def test_relax_trace_at_60_seconds(tiny_model, tiny_context):
    _, trace = run(tiny_model, tiny_context[:1], "relax", 240, seeds=(7,))
    assert len(trace) == 80
    for record in trace:
        t = record["start"]
        if t < 6:  # dense warm-up: chunks 0 and 1 see everything at true positions
            assert [a["frame"] for a in record["attended"]] == list(range(t + 3))
            assert [a["position"] for a in record["attended"]] == list(range(t + 3))
            continue
        attended = record["attended"]
        assert len(attended) == 7
        assert [a["role"] for a in attended] == ["sink", "sink", "history", "tail"] + ["current"] * 3
        assert [a["position"] for a in attended] == list(range(t - 4, t + 3))
        assert [a["frame"] for a in attended][:2] == [0, 1]
        assert [a["frame"] for a in attended][3:] == list(range(t - 1, t + 3))
        candidates = [c["frame"] for c in record.get("candidates", [])]
        assert attended[2]["frame"] in (candidates or build_policy("relax").candidate_frames(t))
        if t >= 120:
            assert candidates == [t - 58, t - 44, t - 30, t - 16]


def test_relax_history_matches_brute_force_score_per_sample(tiny_model):
    """Each sample picks argmax_h cos(p_h, p_sink) - 2 cos(p_h, p_tail), computed here from raw layer-0 keys."""
    context = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(5))
    store = NaiveStore(3, 4)
    _, trace = run(tiny_model, context, "relax", 45, store=store, seeds=(1, 2, 3))
    proto = lambda keys: torch.nn.functional.normalize(keys.float().mean(dim=(0, 1)), dim=-1)  # noqa: E731
    checked = 0
    for record in trace:
        if "candidates" not in record:
            continue
        b, t = record["sample"], record["start"]
        sink = proto(torch.cat([store.layer0_keys(0)[b], store.layer0_keys(1)[b]]))
        tail = proto(store.layer0_keys(t - 1)[b])
        frames = [c["frame"] for c in record["candidates"]]
        scores = [float(proto(store.layer0_keys(f)[b]) @ sink - 2.0 * proto(store.layer0_keys(f)[b]) @ tail)
                  for f in frames]
        assert [c["score"] for c in record["candidates"]] == pytest.approx(scores, abs=1e-5)
        history = [a["frame"] for a in record["attended"] if a["role"] == "history"]
        assert history == [frames[max(range(len(scores)), key=scores.__getitem__)]]
        checked += 1
    assert checked >= 3 * 10


def test_relax_attending_every_cached_frame_equals_dense_over_those_frames(tiny_model, tiny_context):
    """A reservoir of sink+1+tail+chunk frames keeps relax in its dense path over every cached frame, which is
    the attention-sink window over the same frames at the same contiguous positions."""
    relax, relax_trace = run(tiny_model, tiny_context, "relax:sink=2,tail=2,reservoir=8", 30)
    sink, sink_trace = run(tiny_model, tiny_context, "sink:sink=2,tail=3", 30)
    assert [[a["frame"] for a in r["attended"]] for r in relax_trace] == \
        [[a["frame"] for a in r["attended"]] for r in sink_trace]
    assert torch.equal(relax, sink)


def test_relax_fill_phase_equals_dense(tiny_model, tiny_context):
    """Before the first structured chunk relax is the dense window: the first two chunks agree exactly."""
    relax, _ = run(tiny_model, tiny_context, "relax", 6)
    dense, _ = run(tiny_model, tiny_context, "dense", 6)
    assert torch.equal(relax, dense)


def test_same_seed_same_video_and_samples_are_independent(tiny_model, tiny_context):
    a, _ = run(tiny_model, tiny_context, "relax", 24)
    b, _ = run(tiny_model, tiny_context, "relax", 24)
    assert torch.equal(a, b)
    single, _ = run(tiny_model, tiny_context[1:], "relax", 24, seeds=(4,))
    assert torch.allclose(single[0], a[1], atol=1e-5)
    other, _ = run(tiny_model, tiny_context, "relax", 24, seeds=(3, 5))
    assert not torch.allclose(other[1], a[1])


def test_infinity_positions_sit_at_the_horizon(tiny_model, tiny_context):
    _, trace = run(tiny_model, tiny_context[:1], "infinity", 12, seeds=(1,))
    for record in trace[1:]:
        t = record["start"]
        assert [(a["frame"], a["position"]) for a in record["attended"]] == \
            [(0, 16), (t - 1, 17), (t, 18), (t + 1, 19), (t + 2, 20)]


def test_longlive_window(tiny_model, tiny_context):
    _, trace = run(tiny_model, tiny_context[:1], "longlive", 21, seeds=(1,))
    last = trace[-1]["attended"]
    assert [a["frame"] for a in last] == [0, 1, 2, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    assert [a["position"] for a in last] == [a["frame"] for a in last]


@pytest.mark.parametrize(
    "spec, message",
    [("nope", "unknown memory policy 'nope'"), ("relax:foo=1", "unknown parameter 'foo'"),
     ("relax:sink=two", "sink='two' is not a valid int"), ("relax:reservoir=5", "cannot fit"),
     ("relax:hist=5", "cannot exceed candidates"), ("relax:sink", "expected key=value"),
     ("dense:window=0", "must be >= 1"), ("relax:contiguous_rope=maybe", "not a valid bool"),
     ("relax:lambda=nan", "lambda='nan' is not a valid finite float"), ("relax:lambda=-inf", "not a valid finite"),
     ("relax:sink=1,sink=2", "'sink' is given twice"),
     ("relax:lambda=1,lambda_redundancy=2", "'lambda_redundancy' sets 'lambda_redundancy', which is already given")],
)
def test_bad_policy_specs_raise_one_line_errors(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        build_policy(spec)
    assert "\n" not in str(info.value)


def test_lambda_alias_and_spec_round_trip():
    policy = build_policy("relax:lambda=0.5,candidates=6")
    assert policy.lambda_redundancy == 0.5 and policy.candidates == 6
    assert build_policy(policy.spec()) == policy


def test_frame_count_must_be_a_multiple_of_the_chunk(tiny_model, tiny_context):
    with pytest.raises(ValueError, match="multiple of the chunk size 3"):
        run(tiny_model, tiny_context, "relax", 10)


PEAK_SCRIPT = """
import resource, sys, torch
from relaxforcing.memory import build_policy
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import ChunkSampler, StreamSession
torch.manual_seed(0)
model = CausalWanModel(WanConfig.from_name("tiny")).eval()
sampler = ChunkSampler(model, build_policy("relax"))
latents = 0.0
for chunk in StreamSession(sampler, torch.randn(1, 5, 8), [0], (8, 8), int(sys.argv[1])):
    latents += float(chunk.latents.abs().mean())
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.e2e
def test_memory_stays_flat_over_a_5_minute_rollout():
    """Peak RSS of a 1,200-latent-frame (5 min) rollout is within 10% of a 240-frame (60 s) one."""
    peaks = {}
    for frames in (240, 1200):
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(frames)], capture_output=True, text=True,
                             check=True)
        peaks[frames] = int(out.stdout.split()[-1])
    assert peaks[1200] <= 1.10 * peaks[240], json.dumps(peaks)


def test_a_dropped_session_frees_its_store_without_the_garbage_collector(tiny_model, tiny_context):
    """No reference cycle keeps a store alive (on a GPU that would hold gigabytes until the next collection)."""
    session = StreamSession(ChunkSampler(tiny_model, build_policy("relax")), tiny_context, [1, 2], (4, 4))
    for _ in range(3):
        session.next_chunk()
    store = weakref.ref(session.store)
    gc.disable()
    try:
        del session
        assert store() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("spec", ["dense", "dense:window=6", "longlive"])
def test_write_time_rope_equals_read_time_rope(tiny_model, tiny_context, spec, monkeypatch):
    """Policies that attend every frame at its own index store keys rotated when written and attend the store's
    slots where they lie: the same video as rotating at read time (to float rounding: keys come in slot order), the
    same trace, and no workspace."""
    policy = build_policy(spec)
    assert policy.absolute_positions
    sampler = ChunkSampler(tiny_model, policy)
    rotated = StreamSession(sampler, tiny_context, [3, 4], (4, 4), 45)
    monkeypatch.setattr(type(policy), "absolute_positions", property(lambda self: False))
    plain = StreamSession(sampler, tiny_context, [3, 4], (4, 4), 45)
    assert rotated.store.keys_rotated and not plain.store.keys_rotated
    made = [(a, b) for a, b in zip(rotated, plain, strict=True)]
    assert [a.trace for a, _ in made] == [b.trace for _, b in made]
    assert torch.allclose(torch.cat([a.latents for a, _ in made], 2), torch.cat([b.latents for _, b in made], 2),
                          atol=1e-6, rtol=0)
    assert rotated.store.workspace_nbytes() == 0


def test_absolute_positions_are_declared_truthfully():
    """A policy that declares absolute positions attends every frame at its own index in every view."""
    for name in ("dense", "sink", "longlive", "longlive:relative_rope=true", "infinity", "relax", "deep",
                 "memrope", "rollingsink"):
        policy = build_policy(name)
        if policy.absolute_positions:
            assert all(torch.equal(v.positions, v.frames) for v in policy.layouts()), name
