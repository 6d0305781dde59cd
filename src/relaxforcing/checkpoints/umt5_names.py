"""Wan's umT5 encoder checkpoint (``models_t5_umt5-xxl-enc-bf16.pth``) -> transformers `UMT5EncoderModel` names."""

from __future__ import annotations

import torch

from relaxforcing.checkpoints.files import CheckpointError

_BLOCK = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    # umT5 has a relative-position bias per layer ([buckets, heads]).
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    # Wan's FFN is fc2(fc1(x) * gelu(gate(x))); transformers' gated FFN is wo(gelu(wi_0(x)) * wi_1(x)).
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
"""Names inside ``blocks.N.`` (Wan) -> inside ``encoder.block.N.`` (transformers)."""


def umt5_from_wan(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Wan's `T5Encoder` state dict to `UMT5EncoderModel` names (the embedding under both tied names).

    Raises:
        CheckpointError: a key outside Wan's encoder layout (e.g. a decoder or another model's checkpoint).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif key.startswith("blocks.") and key.split(".", 2)[2] in _BLOCK:
            _, index, inner = key.split(".", 2)
            out[f"encoder.block.{index}.{_BLOCK[inner]}"] = value
        else:
            raise CheckpointError(f"{key!r} is not a key of Wan's umT5 encoder checkpoint")
    return out


def umt5_config_from_wan(state_dict: dict[str, torch.Tensor]) -> dict:
    """`UMT5Config` keyword arguments read off the shapes of Wan's encoder checkpoint (umT5-XXL or smaller)."""
    try:
        vocab, d_model = state_dict["token_embedding.weight"].shape
        buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
        d_ff = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
        inner = state_dict["blocks.0.attn.q.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a Wan umT5 encoder checkpoint: no {err.args[0]!r}") from None
    layers = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    return dict(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        relative_attention_num_buckets=buckets, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0,
    )
