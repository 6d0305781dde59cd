"""Classifier-free guidance as one forward of twice the batch equals the two separate forwards it replaces."""

from __future__ import annotations

import torch

from relaxforcing.memory import build_policy
from relaxforcing.sampling import ChunkSampler, StreamSession
from relaxforcing.sampling.guidance import GuidedForward


def test_guided_forward_is_uncond_plus_scale_times_the_difference(tiny_model, tiny_context):
    live = StreamSession(ChunkSampler(tiny_model, build_policy("relax")), tiny_context, [3, 4], (4, 4), None)
    cond_kv = tiny_model.encode_context(tiny_context)
    uncond_kv = tiny_model.encode_context(torch.zeros_like(tiny_context))
    guided = GuidedForward(2.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # the paired buffers are reused as the memory changes from chunk to chunk
        live.next_chunk()
        memory, view = live.sampler.read_memory(live.store, live.store.num_frames, (4, 4))
        x = torch.randn(2, 4, 3, 4, 4, generator=generator)
        t = torch.full((2, 3), 500.0)
        flow = guided.flow(tiny_model, x, t, guided.pair_context(cond_kv, uncond_kv), view.query_positions,
                           guided.pair_memory(memory), compiled=False)
        cond = tiny_model.forward_chunk(x, t, cond_kv, view.query_positions, memory=memory)
        uncond = tiny_model.forward_chunk(x, t, uncond_kv, view.query_positions, memory=memory)
        torch.testing.assert_close(flow, uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(cond, uncond)


def test_paired_context_is_made_again_for_another_prompt(tiny_model, tiny_context):
    guided = GuidedForward(2.0)
    uncond_kv = tiny_model.encode_context(torch.zeros_like(tiny_context))
    first = tiny_model.encode_context(tiny_context)
    paired = guided.pair_context(first, uncond_kv)
    assert guided.pair_context(first, uncond_kv) is paired
    second = guided.pair_context(tiny_model.encode_context(tiny_context + 1), uncond_kv)
    assert not torch.equal(second[0][0][:2], paired[0][0][:2])
    assert torch.equal(second[0][0][2:], uncond_kv[0][0])
