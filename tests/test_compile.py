"""The compiled chunk step (torch.compile of the blocks and head, inductor on CPU) equals the eager path."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from relaxforcing.memory import build_policy
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling import ChunkSampler, StreamSession

pytestmark = pytest.mark.e2e  # inductor compiles C++ kernels: tens of seconds on two cores


def stream(model: CausalWanModel, context: torch.Tensor, spec: str, frames: int, offload: str = "auto",
           **options) -> torch.Tensor:
    session = StreamSession(ChunkSampler(model, build_policy(spec), offload=offload), context, [3, 4], (4, 4),
                            frames, **options)
    return torch.cat([c.latents for c in session], dim=2)


@pytest.fixture
def compiled_twin(tiny_model: CausalWanModel) -> CausalWanModel:
    """A second model with the same weights whose blocks and head are compiled (fresh dynamo state)."""
    torch._dynamo.reset()
    counters.clear()
    twin = CausalWanModel(tiny_model.config).eval()
    twin.load_state_dict(tiny_model.state_dict())
    twin.compile_blocks()
    yield twin
    torch._dynamo.reset()


@pytest.mark.parametrize("spec", ["relax", "dense:window=6"])
def test_compiled_stream_equals_eager(tiny_model, tiny_context, compiled_twin, spec):
    """Float32 on CPU: every chunk within 1e-5 of eager (the graphs reorder float sums, nothing else); after the
    first steady chunk no graph is compiled again, across chunks, layers, steps and the clean pass."""
    eager = stream(tiny_model, tiny_context, spec, 30)
    compiled = stream(compiled_twin, tiny_context, spec, 30)
    assert (compiled - eager).abs().max() <= 1e-5
    graphs = counters["stats"]["unique_graphs"]
    assert 1 <= graphs <= 3  # the blocks' graph, the head's and the last block's keys/values (clean pass)
    again = stream(compiled_twin, tiny_context, spec, 45)
    assert torch.equal(again[:, :, :27], compiled[:, :, :27]) and counters["stats"]["unique_graphs"] == graphs


def test_compiled_blocks_rotate_the_stores_keys_as_eager_does(tiny_model, tiny_context, compiled_twin):
    """Relax offloaded attends its device tier where it lies, un-rotated keys rotated inside each block: the
    compiled blocks (RoPE fused into the join of memory and chunk keys) equal eager, and eager equals the resident
    store, which rotates keys into a workspace, bit for bit."""
    eager = stream(tiny_model, tiny_context, "relax", 30, offload="history")
    assert torch.equal(eager, stream(tiny_model, tiny_context, "relax", 30, offload="none"))
    compiled = stream(compiled_twin, tiny_context, "relax", 30, offload="history")
    assert (compiled - eager).abs().max() <= 1e-5


def test_warm_up_chunks_run_eagerly_and_bit_for_bit(tiny_model, tiny_context, compiled_twin):
    """Only steady-state chunks use the compiled blocks: before it (relax: chunks 0 and 1) the video is the eager
    one bit for bit; a resume replay takes the same path, so it stays bit-exact with compilation on."""
    eager = stream(tiny_model, tiny_context, "relax", 6)
    compiled = stream(compiled_twin, tiny_context, "relax", 6)
    assert torch.equal(eager, compiled) and counters["stats"]["unique_graphs"] == 0
    made = StreamSession(ChunkSampler(compiled_twin, build_policy("relax")), tiny_context, [3, 4], (4, 4), 24,
                         record_latents=True)
    list(made)
    rebuilt = StreamSession(ChunkSampler(compiled_twin, build_policy("relax")), tiny_context, [3, 4], (4, 4), 24)
    rebuilt.replay(made.recorded_latents())
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.store.state_tensors().values(),
                                                  made.store.state_tensors().values(), strict=True))


def test_compiled_chunk_without_memory_equals_eager(tiny_model, tiny_context, compiled_twin):
    """A compiled call with no memory (its own graph) equals eager too."""
    x, t = torch.randn(2, 4, 6, 4, 4), torch.rand(2, 6) * 1000
    cross_kv = tiny_model.encode_context(tiny_context)
    with torch.no_grad():
        positions = torch.arange(6)
        eager = tiny_model.forward_chunk(x, t, cross_kv, positions)
        compiled = compiled_twin.forward_chunk(x, t, cross_kv, positions, compiled=True)
    assert (compiled - eager).abs().max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("spec", ["relax", "dense:window=6"])
def test_cuda_graph_replays_equal_the_compiled_forward(tiny_model, tiny_context, spec):
    """On CUDA, steady denoising steps replayed from CUDA graphs give the compiled forward's latents bit for bit,
    across chunks and across a second stream (a new memory workspace: captured again without compiling)."""
    torch._dynamo.reset()
    model = CausalWanModel(tiny_model.config).eval().cuda()
    model.load_state_dict(tiny_model.state_dict())
    model.compile_blocks()
    context = tiny_context.cuda()
    with model.without_graphs():
        plain = stream(model, context, spec, 36)
    graphed = stream(model, context, spec, 36)
    graphs = model.cuda_graphs
    assert graphs.failed is None and graphs.replays > 0
    assert torch.equal(plain, graphed)
    replays = graphs.replays
    assert torch.equal(stream(model, context, spec, 36), graphed) and graphs.replays > replays
    torch._dynamo.reset()


def test_switching_the_attention_backend_compiles_the_blocks_again(tiny_model, tiny_context, compiled_twin):
    """The backend name is traced with the blocks: after ``use_attention`` the compiled blocks compile anew for it
    (no graph compiled for another kernel is reused) without a graph break, and the video stays the eager one."""
    eager = stream(tiny_model, tiny_context, "relax", 18)
    first = stream(compiled_twin, tiny_context, "relax", 18)
    graphs = counters["stats"]["unique_graphs"]
    compiled_twin.use_attention("math")
    again = stream(compiled_twin, tiny_context, "relax", 18)
    assert counters["stats"]["unique_graphs"] > graphs and not counters["graph_break"]
    assert (first - eager).abs().max() <= 1e-5 and (again - eager).abs().max() <= 1e-5
