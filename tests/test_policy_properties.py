"""Property tests over policy parameters: every view is valid, within budget, and ordered as specified."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from naive_memory import NaiveStore

from relaxforcing.memory import build_policy
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import ChunkSampler, StreamSession


@pytest.fixture(scope="module")
def tiny_stream_model() -> CausalWanModel:
    torch.manual_seed(0)
    return CausalWanModel(WanConfig.from_name("tiny")).eval()


class PrototypeStore(NaiveStore):
    """Random unit prototypes per frame (enough for selection), without running a model."""

    def __init__(self, batch: int, frames: int, seed: int):
        super().__init__(batch, 1)
        self.num_frames = frames
        self.table = torch.nn.functional.normalize(
            torch.randn(batch, max(frames, 1), 8, generator=torch.Generator().manual_seed(seed)), dim=-1)

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.batch)[:, None]
        return torch.nn.functional.normalize(self.table[rows, frames].mean(1), dim=-1)


policies = st.one_of(
    st.builds(lambda w: f"dense:window={w}", st.integers(1, 30)),
    st.builds(lambda s, t: f"sink:sink={s},tail={t}", st.integers(1, 6), st.integers(1, 20)),
    st.builds(lambda s, r, rel: f"longlive:sink={s},recent={r},relative_rope={rel}", st.integers(1, 6),
              st.integers(4, 15), st.booleans()),
    st.builds(lambda s, h: f"infinity:sink={s},horizon={h}", st.integers(1, 4), st.integers(8, 30)),
    st.builds(lambda s, h, t, k, r, c: f"relax:sink={s},hist={h},tail={t},candidates={k + h},reservoir={r},"
              f"contiguous_rope={c}", st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 4),
              st.integers(12, 150), st.booleans()),
    st.builds(lambda s, w, a, b, ad: f"memrope:sink={s},window={w},alpha_long={a},alpha_short={b},adaptive={ad}",
              st.integers(0, 4), st.integers(3, 8).map(lambda c: 3 * c), st.sampled_from([0.01, 0.5, 1]),
              st.sampled_from([0.1, 0.9]), st.booleans()),
    st.builds(lambda w: f"rollingsink:window={w}", st.integers(2, 10).map(lambda c: 3 * c)),
)
deep_policies = st.builds(lambda s, w, b, r, c: f"deep:sink={s},window={w},budget={b},recent={r},compress={c}",
                          st.integers(1, 6), st.sampled_from([12, 15, 21]), st.integers(2, 8), st.integers(1, 4),
                          st.booleans())


def check_frames(policy, frames: list[int], start: int) -> None:
    """Every attended frame exists (a synthesised one is named -1, -2, ...); stored frames are distinct and
    in temporal order, except Rolling Sink's: it re-attends copies of its first frames in sweep order."""
    assert all(-policy.synthesised_frames <= f < start for f in frames), "every attended frame exists"
    stored = [f for f in frames if f >= 0]
    assert all(f < policy.sink_frames or start - f <= policy.max_lag for f in stored), "within max_lag"
    if policy.name != "rollingsink":
        assert len(set(frames)) == len(frames), "no frame twice"
        assert stored == sorted(stored), "memory in temporal order"


@settings(max_examples=150, deadline=None)
@given(spec=policies, chunk=st.integers(0, 120), batch=st.integers(1, 3), seed=st.integers(0, 10))
def test_views_are_valid_bounded_and_ordered(spec, chunk, batch, seed):
    try:
        policy = build_policy(spec)
    except ValueError:
        return  # invalid combinations are rejected up front (tested elsewhere)
    start = 3 * chunk
    view = policy.select(PrototypeStore(batch, start, seed), start)
    for b in range(batch):
        frames = view.frames[b].tolist()
        positions = view.positions[b].tolist()
        check_frames(policy, frames, start)
        queries = view.query_positions.tolist()
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert not positions or positions[-1] < queries[0], "memory sits before the chunk"
        assert queries == list(range(queries[0], queries[0] + 3))
    budget = {"relax": policy.sink_frames + getattr(policy, "hist", 0) + getattr(policy, "tail", 0)}
    name = spec.split(":")[0]
    if name == "relax" and not policy.in_warmup(policy.local_start(start)):
        assert view.frames.shape[1] <= budget["relax"]
    if name == "dense":
        assert view.frames.shape[1] == min(start, policy.window)


@settings(max_examples=16, deadline=None)
@given(spec=st.one_of(policies, deep_policies), chunks=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_streams_are_deterministic_and_traces_consistent(tiny_stream_model, spec, chunks, seed):
    """A real (tiny) model streamed twice with one seed: the same latents and trace; every trace record names
    existing, distinct, earlier frames, and relax stays within its budget after warm-up."""
    try:
        policy = build_policy(spec)
    except ValueError:
        return
    context = torch.randn(1, 5, tiny_stream_model.config.text_dim, generator=torch.Generator().manual_seed(seed))
    runs = []
    for _ in range(2):
        made = list(StreamSession(ChunkSampler(tiny_stream_model, policy), context, [seed], (4, 4), 3 * chunks))
        runs.append((torch.cat([c.latents for c in made], dim=2), [r for c in made for r in c.trace]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    for record in runs[0][1]:
        memory = [a["frame"] for a in record["attended"] if a["role"] != "current"]
        current = [a["frame"] for a in record["attended"] if a["role"] == "current"]
        assert current == [record["start"] + i for i in range(3)]
        check_frames(policy, memory, record["start"])
        positions = [a["position"] for a in record["attended"]]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        if spec.startswith("relax") and "history" in {a["role"] for a in record["attended"]}:
            assert len(memory) <= policy.sink + policy.hist + policy.tail


spec_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda name, params: f"{name}:{params}", st.sampled_from(["relax", "dense", "sink", "longlive",
                                                                        "infinity", "nope", ""]),
              st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
                  ["sink", "hist", "tail", "candidates", "lambda", "lambda_redundancy", "reservoir", "window",
                   "recent", "relative_rope", "contiguous_rope", "x", ""]),
                  st.one_of(st.integers(-5, 500).map(str), st.sampled_from(
                      ["nan", "inf", "-inf", "1e400", "0.5", "true", "maybe", "", " ", "１"]))),
                  max_size=4).map(",".join)),
)


@settings(max_examples=400, deadline=None)
@given(spec=spec_text)
def test_any_memory_spec_builds_a_valid_policy_or_raises_one_line_value_error(spec: str) -> None:
    """Whatever a user types as --memory, the answer is a policy or a one-line ValueError, never another error."""
    try:
        policy = build_policy(spec)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert build_policy(policy.spec()) == policy  # what it built round-trips through its own spec
    assert policy.max_lag >= 1
