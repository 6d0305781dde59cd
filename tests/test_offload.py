"""Offloaded frame stores (history ring in host memory, attended frames staged on the device) give the resident
store's video bit for bit, keep on the device only what chunks attend, and snapshot interchangeably."""

from __future__ import annotations

import copy

import pytest
import torch
from test_session import encode

from relaxforcing.memory import build_policy
from relaxforcing.sampling import ChunkSampler, StreamSession
from relaxforcing.sampling.sampler import resolve_offload, staging_frames

HW = (4, 4)
SPECS = ["relax", "relax:reservoir=24,hist=2,candidates=3,tail=2", "relax:contiguous_rope=true,reservoir=30",
         "dense:window=6", "longlive", "infinity", "sink", "deep:sink=4,window=12,budget=9,recent=3,reuse=2",
         "rollingsink:window=9", "memrope", "memrope:adaptive=true,sink=2,window=9"]


def session(model, spec: str, offload: str, frames: int | None = 75, keep: int = 0, seeds=(3, 4)) -> StreamSession:
    prompts = ["a", "b"][:len(seeds)]
    return StreamSession(ChunkSampler(model, build_policy(spec), offload=offload), encode(prompts), list(seeds), HW,
                         frames, prompts=prompts, encode_text=encode, keep_latents=keep)


def video(live: StreamSession) -> tuple[torch.Tensor, list[dict]]:
    chunks = list(live)
    return torch.cat([c.latents for c in chunks], dim=2), [r for c in chunks for r in c.trace]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("offload", ["history", "all"])
def test_offloaded_store_gives_the_resident_video_bit_for_bit(tiny_model, spec, offload):
    resident, resident_trace = video(session(tiny_model, spec, "none"))
    offloaded_session = session(tiny_model, spec, offload)
    offloaded, offloaded_trace = video(offloaded_session)
    assert torch.equal(offloaded, resident)
    assert offloaded_trace == resident_trace
    store = offloaded_session.store
    if offloaded_session.sampler.offload != "none":
        assert store.host_nbytes() > 0
        assert store.k.shape[2] <= store.sink_frames + store.ring_frames + store.synthesised_frames


@pytest.mark.skipif(not torch.cuda.is_available(), reason="copy streams need a CUDA device")
@pytest.mark.parametrize("offload", ["history", "all"])
def test_offloaded_store_on_cuda_gives_the_resident_video_bit_for_bit(tiny_model, offload):
    """On CUDA the host copies run on a copy stream from staging buffers the compute stream reuses."""
    model = copy.deepcopy(tiny_model).cuda()
    resident, _ = video(session(model, "relax", "none"))
    offloaded_session = session(model, "relax", offload)
    offloaded, _ = video(offloaded_session)
    assert offloaded.is_cuda and torch.equal(offloaded, resident)
    assert offloaded_session.store.host_nbytes() > 0


def test_relax_keeps_sinks_tail_and_one_staged_frame_on_the_device(tiny_model):
    live = session(tiny_model, "relax", "history", frames=None)
    for _ in range(50):  # 150 frames: far past the 58-frame ring
        live.next_chunk()
    store, frame_bytes = live.store, 2 * live.store.k[:, :, 0].nbytes
    assert store.k.shape[2] == 2 + 1 + 1  # sinks | staging (history) | recent (tail)
    assert store.device_nbytes() - store.prototype_sums.nbytes == 4 * frame_bytes
    assert store.host_nbytes() == (2 + 58) * frame_bytes  # every frame the ring holds, once
    assert store.workspace_nbytes() == 0  # the device tier is attended where it lies, keys rotated as read


def test_relax_warm_up_chunks_are_attended_in_place(tiny_model):
    """Before a history frame exists, relax attends sinks and tail: the tail is copied into the empty staging slot,
    so no workspace (a rotated copy of the attended frames) is ever allocated."""
    live = session(tiny_model, "relax", "history", frames=None)
    for _ in range(8):
        live.next_chunk()
        assert live.store.workspace_nbytes() == 0


@pytest.mark.parametrize(
    "spec, offload, expected",
    [("relax", "history", 1), ("relax:hist=2", "history", 2), ("relax", "all", 4), ("dense", "all", 18),
     ("infinity", "all", 2), ("relax", "none", 0)],
)
def test_staging_holds_what_one_chunk_reads_from_host_memory(spec, offload, expected):
    assert staging_frames(build_policy(spec), offload) == expected


def test_auto_offloads_history_on_cuda_only_for_policies_that_have_one():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_offload("auto", build_policy("relax"), cuda) == "history"
    assert resolve_offload("auto", build_policy("relax"), cpu) == "none"
    assert resolve_offload("auto", build_policy("dense"), cuda) == "none"
    assert resolve_offload("history", build_policy("dense"), cpu) == "none"  # nothing beyond what it attends
    assert resolve_offload("all", build_policy("dense"), cpu) == "all"
    with pytest.raises(ValueError, match="--offload 'gpu': choose auto, none, history, all"):
        resolve_offload("gpu", build_policy("relax"), cpu)


@pytest.mark.parametrize("saved_with, restored_with", [("history", "none"), ("none", "history"), ("all", "history"),
                                                       ("none", "all"), ("all", "none")])
@pytest.mark.parametrize("spec", ["relax", "memrope"])
def test_snapshots_move_between_offload_modes(tiny_model, spec, saved_with, restored_with):
    """A state saved from one store layout continues bit for bit in another (the snapshot layout is canonical;
    synthesised frames travel beside it)."""
    reference, _ = video(session(tiny_model, spec, "none", frames=90))
    first = session(tiny_model, spec, saved_with, frames=90)
    head = [first.next_chunk().latents for _ in range(17)]
    tensors, meta = first.state_tensors(), first.state_meta()
    second = session(tiny_model, spec, restored_with, frames=90)
    second.restore(tensors, meta)
    tail = [c.latents for c in second]
    assert torch.equal(torch.cat(head + tail, dim=2), reference)


def test_prompt_switch_recache_is_the_same_offloaded(tiny_model):
    """LongLive's recache rewrites stored frames: staged and host copies follow."""
    outputs = []
    for offload in ("none", "all"):
        live = session(tiny_model, "longlive", offload, frames=60, keep=12)
        head = [live.next_chunk().latents for _ in range(8)]
        assert live.switch_prompt("c") == 6  # the frames longlive still holds
        outputs.append(torch.cat(head + [c.latents for c in live], dim=2))
    assert torch.equal(outputs[0], outputs[1])


def test_reading_more_host_frames_than_staged_raises(tiny_model):
    live = session(tiny_model, "relax", "history", frames=None)
    for _ in range(30):
        live.next_chunk()
    store = live.store
    far = torch.tensor([[40, 50], [41, 51]])  # held (32..89), only in host memory
    with pytest.raises(RuntimeError, match="attends 2 frames held only in host memory, the store stages 1"):
        store.locate(far)
    with pytest.raises(RuntimeError, match=r"frames \[3\] are not in the store"):
        store.locate(torch.tensor([[3], [3]]))
