"""load_dit on tiny checkpoints laid out as the public files are: Self-Forcing .pt, Wan safetensors (single and
sharded), diffusers names, LongLive base + PEFT LoRA; and the refusals: unsafe pickles, bad keys, corrupt files."""

from __future__ import annotations

import copy
import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from wan_fixtures import TINY, diffusers_config_json, random_model, wan_config_json

from relaxforcing.checkpoints import (
    CheckpointError,
    from_diffusers,
    infer_config,
    load_dit,
    to_diffusers,
)
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel

LORA_TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
                "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")
"""Every Linear inside a block, as LongLive's `configure_lora_for_model` targets them."""


def inputs(cfg: WanConfig = TINY) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.in_dim, cfg.chunk_frames, 4, 4, generator=g)  # [B, C, F, H, W]
    t = torch.tensor([[900.0, 500.0, 100.0]])  # [B, F]
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)  # [B, L, text_dim]
    return x, t, context


@torch.no_grad()
def assert_same_output(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x, t, context = inputs()
    assert torch.equal(a(x, t, context), b(x, t, context))


# ---- formats --------------------------------------------------------------------------------------------------


def fsdp_name(key: str) -> str:
    """A key as an FSDP + activation-checkpointing + compiled trainer saves it inside Self-Forcing's wrapper."""
    if key.startswith("blocks."):
        _, index, rest = key.split(".", 2)
        key = f"blocks.{index}._fsdp_wrapped_module._checkpoint_wrapped_module.{rest}"
    return f"model._fsdp_wrapped_module._orig_mod.{key}"


def test_self_forcing_pt_prefers_ema_and_strips_prefixes(tmp_path: Path) -> None:
    ema, raw = random_model(seed=0), random_model(seed=1)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({
        "generator": {f"model.{k}": v for k, v in raw.state_dict().items()},
        "generator_ema": {fsdp_name(k): v for k, v in ema.state_dict().items()},
        "critic": {"x": torch.zeros(1)},
    }, path)
    assert_same_output(load_dit(path, TINY), ema)
    assert_same_output(load_dit(path, TINY, key="generator"), raw)


def test_bare_state_dict_and_model_key(tmp_path: Path) -> None:
    ref = random_model()
    torch.save(ref.state_dict(), tmp_path / "bare.pt")
    torch.save({"model": ref.state_dict()}, tmp_path / "wrapped.pth")
    assert_same_output(load_dit(tmp_path / "bare.pt", TINY), ref)
    assert_same_output(load_dit(tmp_path / "wrapped.pth", TINY), ref)


def test_wan_safetensors_with_sidecar_config(tmp_path: Path) -> None:
    ref = random_model()
    save_file(ref.state_dict(), tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(wan_config_json(TINY)))
    model = load_dit(tmp_path / "diffusion_pytorch_model.safetensors")
    assert model.config == TINY
    assert_same_output(model, ref)
    assert_same_output(load_dit(tmp_path), ref)  # the folder


def test_sharded_safetensors_with_index(tmp_path: Path) -> None:
    ref = random_model()
    state = ref.state_dict()
    names = sorted(state)
    shards = {f"diffusion_pytorch_model-0000{i + 1}-of-00002.safetensors": names[i::2] for i in range(2)}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, tmp_path / file)
        weight_map.update(dict.fromkeys(keys, file))
    index = tmp_path / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(wan_config_json(TINY)))
    assert_same_output(load_dit(index), ref)
    assert_same_output(load_dit(tmp_path), ref)


def test_diffusers_names_round_trip_and_load(tmp_path: Path) -> None:
    ref = random_model()
    state = ref.state_dict()
    renamed = to_diffusers(state)
    assert "blocks.0.norm2.weight" in renamed and "blocks.0.norm3.weight" not in renamed  # the norm swap
    assert from_diffusers(renamed).keys() == state.keys()
    save_file(renamed, tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(diffusers_config_json(TINY)))
    assert load_dit(tmp_path).config == replace(TINY, text_len=512)  # diffusers' config has no text_len
    assert_same_output(load_dit(tmp_path, TINY), ref)


@torch.no_grad()
def test_diffusers_names_fit_diffusers_wan_transformer() -> None:
    """Our renamed weights load strictly into diffusers' model and compute the same flow (one full chunk)."""
    from diffusers import WanTransformer3DModel

    ref = random_model()
    theirs = WanTransformer3DModel(**{k: v for k, v in diffusers_config_json(TINY).items() if k != "_class_name"})
    theirs.load_state_dict(to_diffusers(ref.state_dict()), strict=True)
    x, _, context = inputs()
    t = torch.full((1, TINY.chunk_frames), 700.0)
    ours = ref(x, t, context)
    # diffusers computes RoPE and the timestep sinusoid in float32 (we use float64): equal to ~1e-5.
    torch.testing.assert_close(theirs(x, t[:, 0], context).sample, ours, atol=1e-4, rtol=1e-4)


def test_config_inferred_from_shapes(tmp_path: Path) -> None:
    cfg = WanConfig(dim=256, ffn_dim=64, freq_dim=16, num_heads=2, num_layers=3, in_dim=4, out_dim=4, text_dim=8)
    state = random_model(cfg).state_dict()
    assert infer_config(state) == cfg
    save_file(state, tmp_path / "model.safetensors")
    assert load_dit(tmp_path / "model.safetensors").config == cfg


def test_dtype_and_device(tmp_path: Path) -> None:
    torch.save({"generator_ema": random_model().state_dict()}, tmp_path / "m.pt")
    model = load_dit(tmp_path / "m.pt", TINY, dtype=torch.bfloat16, device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not model.training


# ---- LongLive base + LoRA ---------------------------------------------------------------------------------------


def peft_lora_model(base: CausalWanModel, rank: int, alpha: int):
    """LongLive's adapter: PEFT LoRA on every Linear inside the blocks, with non-zero B so the merge matters."""
    import peft

    targets = [f"blocks.{i}.{name}" for i in range(TINY.num_layers) for name in LORA_TARGETS]
    lora_model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=rank, lora_alpha=alpha,
                                                                          target_modules=targets))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn_like(p))
    return lora_model


def save_longlive(tmp_path: Path, base: CausalWanModel, lora_model) -> tuple[Path, Path]:
    from peft import get_peft_model_state_dict

    base_file, lora_file = tmp_path / "longlive_base.pt", tmp_path / "lora.pt"
    torch.save({"generator": {f"model.{k}": v for k, v in base.state_dict().items()}}, base_file)
    lora_state = get_peft_model_state_dict(lora_model)
    assert next(iter(lora_state)).startswith("base_model.model.blocks.")
    torch.save({"generator_lora": lora_state, "critic_lora": {}, "step": 7}, lora_file)
    return base_file, lora_file


@torch.no_grad()
def test_longlive_lora_merge_matches_peft_and_manual(tmp_path: Path) -> None:
    base = random_model()
    lora_model = peft_lora_model(base, rank=4, alpha=4).eval()
    base_file, lora_file = save_longlive(tmp_path, base, lora_model)
    merged = load_dit(base_file, TINY, lora=lora_file)  # no adapter_config.json: scale 1.0

    state, lora_state = merged.state_dict(), lora_model.state_dict()
    for i in range(TINY.num_layers):
        for name in LORA_TARGETS:
            prefix = f"base_model.model.blocks.{i}.{name}"
            a, b = lora_state[f"{prefix}.lora_A.default.weight"], lora_state[f"{prefix}.lora_B.default.weight"]
            expected = base.state_dict()[f"blocks.{i}.{name}.weight"] + b @ a
            torch.testing.assert_close(state[f"blocks.{i}.{name}.weight"], expected, atol=1e-6, rtol=1e-6)
    x, t, context = inputs()
    torch.testing.assert_close(merged(x, t, context), lora_model(x, t, context), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_lora_scale_from_adapter_config_or_argument(tmp_path: Path) -> None:
    base = random_model()
    lora_model = peft_lora_model(base, rank=4, alpha=8).eval()  # scale alpha / r = 2
    base_file, lora_file = save_longlive(tmp_path, base, lora_model)
    lora_model.peft_config["default"].save_pretrained(tmp_path)  # PEFT's adapter_config.json
    x, t, context = inputs()
    expected = lora_model(x, t, context)
    torch.testing.assert_close(load_dit(base_file, TINY, lora=lora_file)(x, t, context), expected,
                               atol=1e-5, rtol=1e-5)
    by_argument = load_dit(base_file, TINY, lora=lora_file, lora_scale=0.0)
    assert_same_output(by_argument, base)


def test_lora_for_another_model_is_refused(tmp_path: Path) -> None:
    base = random_model()
    torch.save({"generator": base.state_dict()}, tmp_path / "base.pt")
    bad = {"base_model.model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, TINY.dim + 1),
           "base_model.model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(TINY.dim, 2)}
    torch.save({"generator_lora": bad}, tmp_path / "lora.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_dit(tmp_path / "base.pt", TINY, lora=tmp_path / "lora.pt")


# ---- refusals -------------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code in a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "self_forcing_dmd.pt"
    obj = {"generator_ema": {"model.patch_embedding.weight": torch.zeros(1)}, "extra": Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with path.open("wb") as f:
            pickle.dump(obj, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_dit(path, TINY)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = random_model().state_dict()
    del state["blocks.1.ffn.2.bias"]
    state["blocks.0.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_dit(tmp_path / "m.safetensors", TINY)
    message = str(info.value)
    assert "missing (1): blocks.1.ffn.2.bias" in message
    assert "unexpected (1): blocks.0.extra.weight" in message
    assert "WanConfig(dim=32" in message


def test_wrong_shapes_are_named(tmp_path: Path) -> None:
    save_file(random_model().state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shape \(6\): blocks\.0\.ffn\.0\.weight \[64, 32\] != \[48, 32\]"):
        load_dit(tmp_path / "m.safetensors", replace(TINY, ffn_dim=48))


@pytest.mark.parametrize("name", ["m.pt", "m.safetensors"])
def test_truncated_file_is_reported(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    state = random_model().state_dict()
    torch.save(state, path) if name.endswith(".pt") else save_file(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dit(path, TINY)


def test_checkpoint_of_another_model_is_reported(tmp_path: Path) -> None:
    vae_like = {"decoder.conv1.weight": torch.zeros(4, 4, 3, 3, 3), "conv2.weight": torch.zeros(4, 4, 1, 1, 1)}
    torch.save(vae_like, tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(CheckpointError, match="not a Wan DiT checkpoint"):
        load_dit(tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_dit(tmp_path / "Wan2.1_VAE.pth", TINY)


def test_small_dim_without_config_asks_for_one(tmp_path: Path) -> None:
    save_file(random_model().state_dict(), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="pass config="):
        load_dit(tmp_path / "m.safetensors")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_dit(tmp_path / "nope.pt", TINY)


def test_non_finite_weights_are_named(tmp_path: Path) -> None:
    state = random_model().state_dict()
    state["blocks.1.ffn.0.weight"][3, 2] = float("nan")
    state["head.head.weight"][0, 0] = float("inf")
    save_file(state, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"NaN or Inf values in 2 tensors: blocks\.1\.ffn\.0\.weight, head"):
        load_dit(tmp_path / "m.safetensors", TINY)


@pytest.mark.parametrize(("change", "message"), [
    ({"num_heads": 0}, "num_heads=0 must be a whole number >= 1"),
    ({"dim": "1536"}, "dim='1536' must be a whole number >= 1"),
    ({"num_layers": -2}, "num_layers=-2 must be a whole number >= 1"),
    ({"patch_size": [1, 2]}, "patch_size=(1, 2) must be three whole numbers"),
    ({"eps": "tiny"}, "eps='tiny' must be a number in (0, 1)"),
    ({"dim": 30, "num_heads": 4}, "dim=30 is not divisible by num_heads=4"),
])
def test_bad_config_json_values_are_named(tmp_path: Path, change: dict, message: str) -> None:
    save_file(random_model().state_dict(), tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**wan_config_json(TINY), **change}))
    with pytest.raises(CheckpointError, match=re.escape(message)) as error:
        load_dit(tmp_path)
    assert "config.json: not a usable Wan DiT config" in str(error.value)
