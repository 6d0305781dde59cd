"""The causal Wan DiT: key names, time and RoPE conventions, block-causal vs incremental equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from relaxforcing.memory import build_policy
from relaxforcing.model.attention import attention
from relaxforcing.model.config import WanConfig
from relaxforcing.model.rope import apply_rope, axis_frequencies, axis_pairs, rope_factors
from relaxforcing.model.wan import CausalWanModel, MemoryKV, SelfAttentionInputs, feed_forward, sinusoidal_embedding
from relaxforcing.sampling import ChunkSampler, StreamSession

WAN_BLOCK_KEYS = {
    "modulation", "norm3.weight", "norm3.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias",
    *(f"{attn}.{p}.{w}" for attn in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")),
    *(f"{attn}.{n}.weight" for attn in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")),
}
WAN_TOP_KEYS = {
    "patch_embedding.weight", "patch_embedding.bias", "head.head.weight", "head.head.bias", "head.modulation",
    *(f"{m}.{i}.{w}" for m, i in (("text_embedding", 0), ("text_embedding", 2), ("time_embedding", 0),
                                  ("time_embedding", 2), ("time_projection", 1)) for w in ("weight", "bias")),
}


def test_state_dict_uses_original_wan_names():
    model = CausalWanModel(WanConfig.from_name("tiny"))
    expected = WAN_TOP_KEYS | {f"blocks.{i}.{k}" for i in range(2) for k in WAN_BLOCK_KEYS}
    assert set(model.state_dict()) == expected


def test_full_size_shapes_match_the_public_checkpoint():
    cfg = WanConfig.from_name("wan2.1-t2v-1.3b")
    with torch.device("meta"):
        model = CausalWanModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (1536, 16, 1, 2, 2)
    assert shapes["time_projection.1.weight"] == (9216, 1536)
    assert shapes["blocks.29.ffn.0.weight"] == (8960, 1536)
    assert shapes["blocks.0.self_attn.norm_k.weight"] == (1536,)
    assert shapes["head.head.weight"] == (64, 1536)
    assert shapes["head.modulation"] == (1, 2, 1536)
    assert shapes["text_embedding.0.weight"] == (1536, 4096)
    assert sum(v.numel() for v in model.state_dict().values()) == pytest.approx(1.42e9, rel=0.02)


def test_sinusoid_is_cos_first_in_float64():
    emb = sinusoidal_embedding(8, torch.tensor([0.0, 1.0]))
    assert emb.dtype == torch.float64
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float64))
    assert emb[1, 0] == pytest.approx(torch.cos(torch.tensor(1.0, dtype=torch.float64)).item())


def test_rope_split_is_22_21_21_for_head_dim_128():
    assert axis_pairs(128) == (22, 21, 21)
    ft, fh, fw = axis_frequencies(128)
    assert ft[1].item() == pytest.approx(10000 ** (-2 / 44))
    assert fh[1].item() == pytest.approx(10000 ** (-2 / 42))


def _table_rope(x: torch.Tensor, start_frame: int, grid: tuple[int, int]) -> torch.Tensor:
    """Write-time reference: Wan's 1024-row table, sliced at the chunk's absolute frames (as Self-Forcing does)."""
    head_dim = x.shape[-1]
    tables = [torch.polar(torch.ones(1024, f.numel(), dtype=torch.float64), torch.outer(torch.arange(1024.0,
              dtype=torch.float64), f)) for f in axis_frequencies(head_dim)]
    f_count = x.shape[1] // (grid[0] * grid[1])
    h, w = grid
    factors = torch.cat([
        tables[0][start_frame:start_frame + f_count].view(f_count, 1, 1, -1).expand(f_count, h, w, -1),
        tables[1][:h].view(1, h, 1, -1).expand(f_count, h, w, -1),
        tables[2][:w].view(1, 1, w, -1).expand(f_count, h, w, -1),
    ], dim=-1).reshape(1, f_count * h * w, -1)
    pairs = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * factors[:, :, None]).flatten(-2).to(x.dtype)


def test_read_time_rope_equals_write_time_rope():
    grid = (3, 4)
    k = torch.randn(2, 3 * 12, 2, 16)
    for start in (0, 7, 1000):
        read_time = apply_rope(k, rope_factors(torch.arange(start, start + 3), grid, 16)[None])
        assert torch.equal(read_time, _table_rope(k, start, grid))


def test_rope_positions_beyond_1024_keep_relative_scores():
    grid = (2, 2)
    q, k = torch.randn(1, 4, 1, 32, dtype=torch.float64), torch.randn(1, 4, 1, 32, dtype=torch.float64)

    def score(q_pos: int, k_pos: int) -> torch.Tensor:
        rq = apply_rope(q, rope_factors(torch.tensor([q_pos]), grid, 32)[None])
        rk = apply_rope(k, rope_factors(torch.tensor([k_pos]), grid, 32)[None])
        return (rq * rk).sum(-1)

    assert torch.allclose(score(10, 3), score(5010, 5003), atol=1e-8)
    assert torch.isfinite(rope_factors(torch.tensor([123456]), grid, 32)).all()


def test_block_causal_mask_hides_future_chunks(tiny_model, tiny_context):
    x = torch.randn(2, 4, 9, 4, 4)
    t = torch.rand(2, 9) * 1000
    out = tiny_model(x, t, tiny_context)
    x2 = x.clone()
    x2[:, :, 6:] += 1.0  # change only the last chunk
    out2 = tiny_model(x2, t, tiny_context)
    assert torch.equal(out[:, :, :6], out2[:, :, :6])
    assert not torch.allclose(out[:, :, 6:], out2[:, :, 6:])


@pytest.mark.parametrize("num_frames, window", [(12, None), (30, 18)])
def test_incremental_dense_equals_full_block_causal_forward(tiny_model, tiny_context, num_frames, window):
    """Every denoising step and clean pass of the streaming sampler equals the full-sequence forward."""
    sampler = ChunkSampler(tiny_model, build_policy("dense:window=18"))
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
    original = tiny_model.forward_chunk

    def recording(x, t, cross_kv, query_positions, **options):
        out = original(x, t, cross_kv, query_positions, **options)
        calls.append((x, t, out, int(query_positions[0])))
        return out

    tiny_model.forward_chunk = recording
    chunks = list(StreamSession(sampler, tiny_context, [3, 4], (4, 4), num_frames))
    clean = torch.cat([c.latents for c in chunks], dim=2)
    assert len(calls) == 4 * (num_frames // 3)  # 4 steps per chunk (the clean pass is encode_chunk)
    worst = 0.0
    for x, t, out, start in calls:
        full_x = torch.cat([clean[:, :, :start], x], dim=2)
        full_t = torch.cat([torch.zeros(2, start), t], dim=1)
        reference = tiny_model(full_x, full_t, tiny_context, window_frames=21 if window else None)
        worst = max(worst, (reference[:, :, start:] - out).abs().max().item())
    assert worst <= 1e-5


def test_clean_pass_hands_out_the_keys_and_values_of_a_whole_forward(tiny_model, tiny_context):
    """encode_chunk skips the last block's attention and all after it, yet hands out, layer by layer, the keys and
    values the whole forward computes, bit for bit."""
    cfg = tiny_model.config
    grid = tiny_model.token_grid((4, 4))
    memory_tokens = 2 * grid[0] * grid[1]
    memory = MemoryKV(keys=torch.randn(cfg.num_layers, 2, memory_tokens, cfg.num_heads, cfg.head_dim),
                      values=torch.randn(cfg.num_layers, 2, memory_tokens, cfg.num_heads, cfg.head_dim),
                      rope=rope_factors(torch.tensor([0, 1]), grid, cfg.head_dim)[None])
    x, t = torch.randn(2, 4, 3, 4, 4), torch.zeros(2, 3)
    cross_kv = tiny_model.encode_context(tiny_context)
    whole: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    clean: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    inputs = SelfAttentionInputs(rope=rope_factors(torch.arange(6, 9), grid, cfg.head_dim)[None], memory=memory,
                                 capture_kv=lambda *kv: whole.append(kv))
    with torch.no_grad():
        tiny_model._run(x, t, cross_kv, inputs)
        assert tiny_model.encode_chunk(x, t, cross_kv, torch.arange(6, 9), lambda *kv: clean.append(kv),
                                       memory=memory) is None
    assert [layer for layer, _, _ in clean] == list(range(cfg.num_layers))
    for (_, k, v), (_, k_clean, v_clean) in zip(whole, clean, strict=True):
        assert torch.equal(k, k_clean) and torch.equal(v, v_clean)


def test_blocks_take_and_give_token_major_tokens(tiny_model, tiny_context):
    """The token stream is [B, L, C] contiguous through every block (a channel-major view would make each block's
    norms and residual adds read strided channels, and its output keep that layout)."""
    layouts: list[bool] = []
    hooks = [block.register_forward_hook(lambda _, args, out: layouts.extend([args[0].is_contiguous(),
                                                                              out[0].is_contiguous()]))
             for block in tiny_model.blocks]
    try:
        tiny_model(torch.randn(2, 4, 3, 4, 4), torch.rand(2, 3) * 1000, tiny_context)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(layouts) == 2 * tiny_model.config.num_layers and all(layouts)


def test_wrong_latent_shapes_are_rejected(tiny_model, tiny_context):
    with pytest.raises(ValueError, match="latents must be"):
        tiny_model(torch.randn(2, 5, 3, 4, 4), torch.zeros(2, 3), tiny_context)
    with pytest.raises(ValueError, match="timesteps must be"):
        tiny_model(torch.randn(2, 4, 3, 4, 4), torch.zeros(2, 4), tiny_context)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        tiny_model(torch.randn(2, 4, 3, 5, 4), torch.zeros(2, 3), tiny_context)
    with pytest.raises(ValueError, match="not divisible by the chunk size"):
        tiny_model(torch.randn(2, 4, 4, 4, 4), torch.zeros(2, 4), tiny_context)
    with pytest.raises(ValueError, match="context must be"):
        tiny_model(torch.randn(2, 4, 3, 4, 4), torch.zeros(2, 3), torch.randn(2, 5, 7))


def test_teacher_forcing_equals_incremental_chunks(tiny_model, tiny_context):
    """The training path computes, for every noisy chunk, what the sampler computes against clean memory."""
    clean = torch.randn(2, 4, 9, 4, 4)
    noisy = torch.randn(2, 4, 9, 4, 4)
    t = torch.tensor([[900.0] * 3 + [500.0] * 3 + [100.0] * 3] * 2)
    out = tiny_model.forward_teacher_forcing(clean, noisy, t, tiny_context)
    for start in (0, 3, 6):
        x = torch.cat([clean[:, :, :start], noisy[:, :, start:start + 3]], dim=2)
        times = torch.cat([torch.zeros(2, start), t[:, start:start + 3]], dim=1)
        reference = tiny_model(x, times, tiny_context)[:, :, start:]
        assert torch.allclose(out[:, :, start:start + 3], reference, atol=1e-5)


def test_bfloat16_model_streams_close_to_float32(tiny_model, tiny_context):
    """The half-precision path (as on GPU: every parameter bf16, norms and RoPE in float32) runs and stays close."""
    bf16 = CausalWanModel(tiny_model.config).eval()
    bf16.load_state_dict(tiny_model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    assert bf16.blocks[0].norm3.weight.dtype == torch.bfloat16
    chunks = {}
    for name, model in (("fp32", tiny_model), ("bf16", bf16)):
        sampler = ChunkSampler(model, build_policy("relax", model.config.chunk_frames))
        context = tiny_context.to(model.patch_embedding.weight)
        chunks[name] = torch.cat([c.latents for c in StreamSession(sampler, context, [0, 1], (4, 4), 6)], dim=2)
    assert torch.isfinite(chunks["bf16"]).all()
    error = (chunks["bf16"] - chunks["fp32"]).norm() / chunks["fp32"].norm()
    assert error < 0.05, error


def test_attention_backends_stream_the_same_video(tiny_model, tiny_context):
    """Each named SDPA kernel that runs on this machine gives the auto path's video (float32, to rounding); the
    model reports the backend it uses, and an unknown name is a one-line error."""
    def video() -> torch.Tensor:
        sampler = ChunkSampler(tiny_model, build_policy("relax", tiny_model.config.chunk_frames))
        return torch.cat([c.latents for c in StreamSession(sampler, tiny_context, [0, 1], (4, 4), 9)], dim=2)

    auto = video()
    for backend in ("math", "flash"):  # the kernels PyTorch has on CPU
        tiny_model.use_attention(backend)
        assert {m.backend for m in tiny_model.modules() if hasattr(m, "backend")} == {backend}
        assert tiny_model.attention_backend == backend
        torch.testing.assert_close(video(), auto, atol=1e-5, rtol=0)
    tiny_model.use_attention("cudnn")  # a CUDA kernel: asking for it on CPU shows the name reaches every call
    with pytest.raises(RuntimeError):
        video()
    tiny_model.use_attention("auto")
    with pytest.raises(ValueError, match="--attention 'fast': choose auto, flash, cudnn, efficient, math"):
        tiny_model.use_attention("fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlashAttention and cuDNN attention run on CUDA only")
@pytest.mark.parametrize("keys", [512, 4680])
def test_auto_attention_equals_float32_attention_on_cuda(keys):
    """``auto`` (FlashAttention where it imports, else PyTorch SDPA) gives float32 attention to bf16 rounding
    (relative L2) for text-length and chunk-length keys, eager and compiled."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, n, 12, 128, device="cuda", dtype=torch.bfloat16) for n in (1560, keys, keys))
    expected = attention(q.float(), k.float(), v.float(), backend="math")
    for run in (attention, torch.compile(attention, fullgraph=True)):
        out = run(q, k, v)
        assert out.shape == q.shape and out.dtype == torch.bfloat16
        error = (out.float() - expected).norm() / expected.norm()
        assert error < 1e-2, error  # bf16 output rounding alone is ~3e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused GELU epilogue runs on CUDA only")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_gelu_feed_forward_equals_the_modules_on_cuda(dtype):
    """The up-projection with its GELU in the cuBLASLt epilogue gives Wan's Linear, tanh GELU, Linear (to the
    dtype's rounding), eager and compiled; with autograd on it runs the modules (the fused call has no backward)."""
    torch.manual_seed(0)
    ffn = nn.Sequential(nn.Linear(256, 1024), nn.GELU(approximate="tanh"), nn.Linear(1024, 256)).cuda().to(dtype)
    x = torch.randn(2, 300, 256, device="cuda", dtype=dtype)
    expected = ffn(x)
    feed_forward(ffn, x).sum().backward()  # the modules' path: gradients reach the weights
    assert ffn[0].weight.grad is not None
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    with torch.no_grad():
        torch.testing.assert_close(feed_forward(ffn, x), expected, **tolerance)
        torch.testing.assert_close(torch.compile(feed_forward, fullgraph=True)(ffn, x), expected, **tolerance)
