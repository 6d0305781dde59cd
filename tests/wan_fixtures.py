"""Tiny files laid out as the public downloads: the DiT (Wan and diffusers configs, a Self-Forcing ``.pt``), umT5
(Wan ``.pth`` names and tokenizer), the Wan2.1 VAE (original names), and whole Wan folders built from them."""

from __future__ import annotations

import json
import re
import weakref
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from relaxforcing.checkpoints import to_diffusers
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.text.umt5 import WAN_T5_FILE, UMT5TextEncoder

# ---- the DiT -----------------------------------------------------------------------------------------------------


TINY = WanConfig.from_name("tiny")


def random_model(cfg: WanConfig = TINY, seed: int = 0) -> CausalWanModel:
    torch.manual_seed(seed)
    model = CausalWanModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def wan_config_json(cfg: WanConfig) -> dict:
    """Wan's own ``config.json`` layout (as in Wan2.1-T2V-1.3B), plus the fields tiny models change."""
    return {"_class_name": "WanModel", "model_type": "t2v", **cfg.to_dict()}


def diffusers_config_json(cfg: WanConfig) -> dict:
    """A diffusers ``transformer/config.json`` for the same model."""
    return {
        "_class_name": "WanTransformer3DModel", "patch_size": list(cfg.patch_size),
        "num_attention_heads": cfg.num_heads, "attention_head_dim": cfg.head_dim, "in_channels": cfg.in_dim,
        "out_channels": cfg.out_dim, "text_dim": cfg.text_dim, "freq_dim": cfg.freq_dim, "ffn_dim": cfg.ffn_dim,
        "num_layers": cfg.num_layers, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": cfg.eps,
    }


# ---- umT5 --------------------------------------------------------------------------------------------------------


WORDS = ("a", "cat", "dog", "runs", "on", "the", "beach", "red", "car", "at", "sunset", "slowly")
MAX_LEN = 12


def tiny_tokenizer() -> T5TokenizerFast:
    """A word-level Unigram tokenizer with T5's special tokens (pad 0, eos 1, unk 2) and EOS appended."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0 - i) for i, w in enumerate(WORDS)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0)


def tiny_umt5(seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    return UMT5EncoderModel(config).eval()


_WAN_NAMES = [  # transformers UMT5 name -> Wan T5Encoder name (wan/modules/t5.py layout)
    (r"shared\.weight", "token_embedding.weight"),
    (r"encoder\.final_layer_norm\.weight", "norm.weight"),
    (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
     r"blocks.\1.pos_embedding.embedding."),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
    (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
]


def wan_state(model: UMT5EncoderModel) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.state_dict().items():
        if key == "encoder.embed_tokens.weight":  # tied to shared.weight; Wan stores it once
            continue
        name = next(re.sub(p, r, key) for p, r in _WAN_NAMES if re.match(p, key))
        out[name] = value.clone()
    return out


def write_wan_folder(root: Path, model: UMT5EncoderModel) -> Path:
    """A Wan model folder: the encoder .pth and the tokenizer in google/umt5-xxl/."""
    root.mkdir(parents=True, exist_ok=True)
    torch.save(wan_state(model), root / WAN_T5_FILE)
    tiny_tokenizer().save_pretrained(root / "google" / "umt5-xxl")
    return root


def track_encoder_loads(monkeypatch) -> list[weakref.ref]:
    """Record a weak reference to the model of every umT5 encoder loaded from now on (to count loads and check
    that each was freed)."""
    loaded: list[weakref.ref] = []
    real_load = UMT5TextEncoder.load

    def tracking_load(*args, **kwargs) -> UMT5TextEncoder:
        encoder = real_load(*args, **kwargs)
        loaded.append(weakref.ref(encoder.model))
        return encoder

    monkeypatch.setattr(UMT5TextEncoder, "load", tracking_load)
    return loaded


# ---- the VAE -----------------------------------------------------------------------------------------------------


TINY_VAE = {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2}
"""Same layout as Wan2.1 (4 levels, 2 residual blocks, so the same flat indices), 12x narrower."""

_RESIDUAL = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3", "conv2": "residual.6",
             "conv_shortcut": "shortcut"}


def original_name(key: str, num_res_blocks: int = 2) -> str:
    """diffusers -> ``Wan2.1_VAE.pth`` name, written from Wan's `vae.py` layout (flat nn.Sequential stacks)."""
    key = re.sub(r"(resnets\.\d+|down_blocks\.\d+)\.(norm1|conv1|norm2|conv2|conv_shortcut)\.",
                 lambda m: f"{m[1]}.{_RESIDUAL[m[2]]}.", key)
    key = re.sub(r"^quant_conv\.", "conv1.", key)
    key = re.sub(r"^post_quant_conv\.", "conv2.", key)
    key = re.sub(r"^(encoder|decoder)\.conv_in\.", r"\1.conv1.", key)
    key = re.sub(r"\.norm_out\.", ".head.0.", key)
    key = re.sub(r"\.conv_out\.", ".head.2.", key)
    key = re.sub(r"\.mid_block\.attentions\.0\.", ".middle.1.", key)
    key = re.sub(r"\.mid_block\.resnets\.(\d)\.", lambda m: f".middle.{2 * int(m[1])}.", key)
    key = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", key)
    stride = num_res_blocks + 2  # per decoder level: n + 1 residual blocks and one upsampler
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
                 lambda m: f"decoder.upsamples.{int(m[1]) * stride + int(m[2])}.", key)
    return re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                  lambda m: f"decoder.upsamples.{int(m[1]) * stride + num_res_blocks + 1}.", key)


# ---- whole folders -----------------------------------------------------------------------------------------------


TINY_WAN = WanConfig(dim=32, ffn_dim=64, freq_dim=16, num_heads=2, num_layers=2, in_dim=16, out_dim=16,
                     text_dim=16)
"""A two-layer DiT that fits the tiny VAE (16 latent channels) and the tiny umT5 (16 wide); 512 text tokens as
in Wan (diffusers' config has no text length, so both layouts must agree on Wan's)."""

TEST_SIZE = "64x32"
"""A test-only ``WIDTHxHEIGHT`` (latents 4x8): the CPU VAE needs minutes per second of 832x480 video."""
TEST_LATENT_HW = (4, 8)


def tiny_dit(seed: int = 0) -> CausalWanModel:
    return random_model(TINY_WAN, seed)


def tiny_vae(seed: int = 0) -> AutoencoderKLWan:
    """The Wan2.1 VAE layout at base_dim 8, weights lifted off their init so the video is not flat."""
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**TINY_VAE).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return vae


def write_wan_dir(root: Path, seed: int = 0) -> Path:
    """``Wan2.1-T2V-1.3B``'s layout: ``config.json``, ``Wan2.1_VAE.pth`` (original names),
    ``models_t5_umt5-xxl-enc-bf16.pth`` (Wan's T5 names) and the tokenizer in ``google/umt5-xxl/``."""
    write_wan_folder(root, tiny_umt5(seed))
    (root / "config.json").write_text(json.dumps(wan_config_json(TINY_WAN)))
    torch.save({original_name(k): v for k, v in tiny_vae(seed).state_dict().items()}, root / "Wan2.1_VAE.pth")
    return root


def write_self_forcing_pt(path: Path, model: CausalWanModel) -> Path:
    """Self-Forcing's training checkpoint: ``generator_ema`` (and a different ``generator``), keys ``model.*``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    decoy = {f"model.{k}": torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save({"generator": decoy, "generator_ema": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def write_diffusers_dir(root: Path, model: CausalWanModel, seed: int = 0) -> Path:
    """``Wan2.1-T2V-1.3B-Diffusers``'s layout, holding the same weights as :func:`write_wan_dir` with ``seed``."""
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    (root / "transformer" / "config.json").write_text(json.dumps(diffusers_config_json(TINY_WAN)))
    state = {k: v.contiguous() for k, v in to_diffusers(model.state_dict()).items()}
    save_file(state, root / "transformer" / "diffusion_pytorch_model.safetensors")
    tiny_vae(seed).save_pretrained(root / "vae")
    tiny_umt5(seed).save_pretrained(root / "text_encoder")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    return root


SMALL_TAE = (8, 8, 4, 4)
"""Stage widths of a tiny TAEHV-layout decoder (the public file: 256, 128, 64, 64)."""


def tae_layout(widths: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The decoder tensors of ``taew2_1.pth`` (TAEHV for Wan 2.1), written out from the published architecture."""
    names = {"decoder.1.weight": (widths[0], 16, 3, 3), "decoder.1.bias": (widths[0],)}
    for stage, (first, grow) in enumerate(zip((3, 9, 15), (1, 2, 2), strict=True)):
        w, nxt = widths[stage], widths[stage + 1]
        for block in range(first, first + 3):  # MemBlocks: conv.0 (2w -> w), conv.2, conv.4; no skip (w -> w)
            names |= {f"decoder.{block}.conv.0.weight": (w, 2 * w, 3, 3), f"decoder.{block}.conv.0.bias": (w,),
                      f"decoder.{block}.conv.2.weight": (w, w, 3, 3), f"decoder.{block}.conv.2.bias": (w,),
                      f"decoder.{block}.conv.4.weight": (w, w, 3, 3), f"decoder.{block}.conv.4.bias": (w,)}
        names[f"decoder.{first + 4}.conv.weight"] = (w * grow, w, 1, 1)  # TGrow
        names[f"decoder.{first + 5}.weight"] = (nxt, w, 3, 3)  # projection, no bias
    names |= {"decoder.22.weight": (3, widths[3], 3, 3), "decoder.22.bias": (3,)}
    return names


def public_tae_file(folder: Path, widths: tuple[int, ...] = SMALL_TAE, kind: str = "pth",
                    first_tgrow: int = 1) -> Path:
    """A random checkpoint laid out like the public file (encoder tensors included, as there)."""
    generator = torch.Generator().manual_seed(0)
    state = {name: 0.3 * torch.randn(shape, generator=generator) for name, shape in tae_layout(widths).items()}
    if first_tgrow != 1:
        state["decoder.7.conv.weight"] = 0.3 * torch.randn(widths[0] * first_tgrow, widths[0], 1, 1)
    state["encoder.0.weight"] = torch.randn(64, 3, 3, 3)
    path = folder / f"taew2_1.{kind}"
    if kind == "pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return path
