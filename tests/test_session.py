"""StreamSession: parity with the plain sampler, prompt switching (new context + LongLive recache), errors."""

from __future__ import annotations

import zlib

import pytest
import torch

from relaxforcing.memory import build_policy
from relaxforcing.model.rope import rope_factors
from relaxforcing.model.wan import SelfAttentionInputs
from relaxforcing.sampling import ChunkSampler, StreamSession

HW = (4, 4)
SEEDS = [3, 4]


def encode(prompts: list[str]) -> torch.Tensor:
    """A stand-in text encoder for the tiny model: one fixed random ``[5, 8]`` embedding per prompt."""
    for p in prompts:
        if "bad" in p.split():
            raise ValueError(f"unknown word 'bad' in {p!r}")
    return torch.stack([torch.randn(5, 8, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
                        for p in prompts])


def session(model, spec: str = "relax", frames: int | None = 24, keep: int = 12) -> StreamSession:
    return StreamSession(ChunkSampler(model, build_policy(spec)), encode(["a", "b"]), SEEDS, HW, frames,
                         prompts=["a", "b"], encode_text=encode, keep_latents=keep)


@pytest.mark.parametrize("spec, frames", [("relax", 24), ("longlive", None), ("sink", 9)])
def test_session_equals_the_plain_sampler(tiny_model, spec, frames):
    """The driver adds nothing to the one-chunk step: the same chunks as calling it by hand, last one uncommitted."""
    sampler = ChunkSampler(tiny_model, build_policy(spec))
    store, cross_kv = sampler.new_store(2, HW), tiny_model.encode_context(encode(["a", "b"]))
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    count = 8 if frames is None else frames // 3
    chunks = [sampler.denoise_chunk(store, cross_kv, generators, HW, i, commit=frames is None or i + 1 < count)
              for i in range(count)]
    live = session(tiny_model, spec, frames)
    for expected in chunks:
        got = live.next_chunk()
        assert (got.index, got.start) == (expected.index, expected.start)
        assert torch.equal(got.latents, expected.latents)
        assert got.trace == expected.trace
    assert live.done == (frames is not None)
    if frames is not None:
        with pytest.raises(RuntimeError, match="finished"):
            live.next_chunk()


def test_switch_uses_the_new_context_from_the_next_chunk(tiny_model):
    runs = {name: session(tiny_model) for name in ("plain", "same", "new")}
    for run in runs.values():
        for _ in range(3):
            run.next_chunk()
    assert runs["same"].switch_prompt(["a", "b"], recache_frames=0) == 0
    assert runs["new"].switch_prompt("c", recache_frames=0) == 0
    expected = tiny_model.encode_context(encode(["c", "c"]))
    assert all(torch.equal(k, ek) and torch.equal(v, ev)
               for (k, v), (ek, ev) in zip(runs["new"].cross_kv, expected, strict=True))
    after = {name: run.next_chunk().latents for name, run in runs.items()}
    assert torch.equal(after["same"], after["plain"])  # re-encoding the same prompt changes nothing
    assert not torch.allclose(after["new"], after["plain"], atol=1e-3)
    assert runs["new"].prompts == ["c", "c"]


def test_switch_recaches_the_last_frames(tiny_model):
    live = session(tiny_model, "relax", frames=None, keep=12)
    for _ in range(6):  # frames 0..17 committed
        live.next_chunk()
    store = live.store
    before_k, before_v = store.k.clone(), store.v.clone()
    assert live.switch_prompt("c", recache_frames=7) == 7  # frames 11..17: a partial group, then two chunks
    for frame in range(18):
        slot = store.slot(frame)
        changed = not torch.equal(store.k[:, :, slot], before_k[:, :, slot])
        assert changed == (frame >= 11), frame
        assert changed == (not torch.equal(store.v[:, :, slot], before_v[:, :, slot]))
    assert store.num_frames == 18
    live.next_chunk()  # the policy reads the recached store without complaint


def test_recache_equals_one_block_causal_pass(tiny_model):
    """The chunk-by-chunk recache equals LongLive's single block-causal DiT pass over the recached frames."""
    live = session(tiny_model, "relax", frames=None, keep=12)
    latents = [live.next_chunk().latents for _ in range(5)]
    clean = torch.cat(latents, dim=2)[:, :, 6:15]  # frames 6..14: three whole chunks
    live.switch_prompt("c", recache_frames=9)
    cross_kv = tiny_model.encode_context(encode(["c", "c"]))
    grid = tiny_model.token_grid(HW)
    tokens = grid[0] * grid[1]
    chunk_of = (torch.arange(9) // 3).repeat_interleave(tokens)
    mask = (chunk_of[None, :] <= chunk_of[:, None])[None, None]
    rope = rope_factors(torch.arange(6, 15), grid, tiny_model.config.head_dim)[None]
    keys: list[torch.Tensor] = []
    inputs = SelfAttentionInputs(rope=rope, mask=mask, capture_kv=lambda layer, k, v: keys.append(k))
    with torch.no_grad():
        tiny_model._run(clean, torch.zeros(2, 9), cross_kv, inputs)
    for layer, k in enumerate(keys):
        stored = torch.stack([live.store.k[layer, :, live.store.slot(f)] for f in range(6, 15)], dim=1)
        assert torch.allclose(stored.flatten(1, 2), k, atol=1e-5), layer


def test_recache_stops_at_evicted_frames(tiny_model):
    live = session(tiny_model, "infinity", frames=None, keep=12)  # the store holds the sinks and one ring frame
    for _ in range(4):
        live.next_chunk()
    assert live.switch_prompt("c", recache_frames=12) == 1


def test_switch_errors_leave_the_session_unchanged(tiny_model):
    live = session(tiny_model, frames=6, keep=6)
    live.next_chunk()
    cross_kv = live.cross_kv
    with pytest.raises(ValueError, match="unknown word 'bad'"):
        live.switch_prompt("a bad prompt")
    with pytest.raises(ValueError, match="recache_frames=7 must be in 0..6"):
        live.switch_prompt("c", recache_frames=7)
    with pytest.raises(ValueError, match="3 prompts for a batch of 2"):
        live.switch_prompt(["a", "b", "c"])
    assert live.cross_kv is cross_kv and live.prompts == ["a", "b"]
    live.next_chunk()
    with pytest.raises(RuntimeError, match="finished"):
        live.switch_prompt("c")


def test_session_rejects_bad_arguments(tiny_model):
    sampler = ChunkSampler(tiny_model, build_policy("relax"))
    with pytest.raises(ValueError, match="num_frames=10 must be a positive multiple of the chunk size 3"):
        StreamSession(sampler, encode(["a"]), [1], HW, num_frames=10)
    with pytest.raises(ValueError, match="1 seeds for a context of 2 prompts"):
        StreamSession(sampler, encode(["a", "b"]), [1], HW)
    with pytest.raises(ValueError, match="2 prompts and 1 seeds"):
        StreamSession(sampler, encode(["a"]), [1], HW, prompts=["a", "b"])
    with pytest.raises(ValueError, match="needs an empty store"):
        made = StreamSession(sampler, encode(["a"]), [1], HW, 6)
        made.next_chunk()
        StreamSession(sampler, encode(["a"]), [1], HW, store=made.store)
