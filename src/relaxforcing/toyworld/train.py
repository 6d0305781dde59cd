"""Training of the embedded toy model: the toy autoencoder, then block-causal teacher-forced flow matching of the
DiT on 21-latent-frame clips.

Runs in time-boxed sessions (``--time-budget``) that checkpoint and resume, so a 10-minute command limit is
no obstacle. ``export`` writes the EMA DiT weights (fp16), the codec and a JSON sidecar into the package.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from relaxforcing.codecs.toy_autoencoder import ToyAutoencoder
from relaxforcing.devices import upload
from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel
from relaxforcing.sampling.schedule import FlowSchedule
from relaxforcing.text.toy import ToyTextEncoder
from relaxforcing.toyworld.captions import PHRASE_STARTS, VOCABULARY, caption
from relaxforcing.toyworld.render import render_batch, to_float
from relaxforcing.toyworld.world import sample_world

TOY_SCHEDULE = FlowSchedule(steps=(1000, 800, 600, 400, 200), warp=True, shift=3.0, fresh_noise=False, guidance=2.5)
"""Five Euler steps of the flow ODE with classifier-free guidance 2.5 (the toy is not distilled: Self-Forcing's four
fresh-noise steps leave it blurry). Guidance keeps the named objects in the picture and sharpens their shapes; each
guided step costs two predictions, which five steps instead of eight pay for."""
CLIP_LATENT_FRAMES = 21
"""Self-Forcing's training horizon (81 video frames; here 84 = 21 x 4)."""


@dataclass
class TrainConfig:
    steps: int = 20000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 300
    weight_decay: float = 0.01
    ema: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    save_every: int = 500
    codec_seconds: float = 60.0
    """Time spent training the autoencoder before the DiT (first session only)."""
    caption_dropout: float = 0.1
    """Share of clips trained with the empty (all-zero) text context: teaches the unconditional flow that
    classifier-free guidance (``FlowSchedule.guidance``) contrasts with the conditional one."""
    phrase_context: bool = True
    """Encode captions with each word's phrase mixed in (``ToyTextEncoder(phrase_starts=...)``)."""
    image_start: float = 0.1
    """Share of clips trained as ``generate --image`` starts a video: the clip opens on a still (its first frame
    held for the 4 video frames of the first latent frame, :func:`open_on_a_still`), and that latent frame is given
    clean in the first chunk and left out of the loss. Without it a picture's still latent frame is unlike anything
    the model saw, and the objects it shows start slowly and stay slow."""

    def phrase_starts(self) -> tuple[str, ...]:
        return PHRASE_STARTS if self.phrase_context else ()


class ToyData:
    """An endless stream of rendered clips and captions from fresh world seeds; ``caption_dropout`` of the
    captions are replaced by the empty context, ``image_start`` of the clips open on a still."""

    def __init__(self, device: torch.device, seed: int, caption_dropout: float = 0.0,
                 phrase_starts: tuple[str, ...] = (), image_start: float = 0.0):
        self.device = device
        self.text = ToyTextEncoder(VOCABULARY, phrase_starts=phrase_starts)
        self.rng = np.random.default_rng(seed)
        self.caption_dropout = caption_dropout
        self.image_start = image_start

    def clips(self, size: int, frames: int) -> tuple[torch.Tensor, list[str]]:
        """``[B, frames, 3, 64, 64]`` video in [-1, 1] from any phase of a long video, and captions."""
        worlds = [sample_world(int(s)) for s in self.rng.integers(0, 2**62, size)]
        start = int(self.rng.integers(0, 4 * 240))
        videos, _ = render_batch(worlds, frames, self.device, start_frame=start)
        captions = [caption(w.scene, with_sizes=bool(self.rng.integers(0, 2))) for w in worlds]
        return to_float(videos), captions

    def batch(self, size: int, codec: ToyAutoencoder) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Latents ``[B, 16, 21, 16, 16]``, text context, and which clips open on a still (None: none can)."""
        video, captions = self.clips(size, 4 * CLIP_LATENT_FRAMES)
        still = None
        if self.image_start > 0:  # drawn only when asked, so runs without it see the same data as before
            still = upload(torch.from_numpy(self.rng.random(size) < self.image_start), self.device)
            video = torch.where(still[:, None, None, None, None], open_on_a_still(video), video)
        with torch.no_grad():
            latents = codec.encode(video)
        dropped = self.rng.random(size) < self.caption_dropout
        return latents, upload(self.text.encode(["" if d else c for c, d in zip(captions, dropped, strict=True)]),
                               self.device), still


def open_on_a_still(video: torch.Tensor) -> torch.Tensor:
    """``[B, T, 3, H, W]`` -> the clip as a picture starts it: the first frame held for the first latent frame's 4
    video frames, then the clip from its second frame on (the last 3 frames drop out)."""
    return torch.cat([video[:, :1].expand(-1, 3, -1, -1, -1), video[:, :-3]], dim=1)


def train_codec(codec: ToyAutoencoder, data: ToyData, seconds: float) -> float:
    """Fit the autoencoder to rendered video (MSE), then set its latent mean/std; returns the last loss."""
    opt = torch.optim.AdamW(codec.parameters(), lr=1e-3)
    began, loss = time.time(), torch.tensor(0.0)
    while time.time() - began < seconds:
        video, _ = data.clips(32, 16)
        loss = torch.nn.functional.mse_loss(codec.decode_raw(codec.encode_raw(video)), video)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        video, _ = data.clips(64, 16)
        z = codec.encode_raw(video)  # [B, 16, F, h, w]
        codec.mean.copy_(z.mean(dim=(0, 2, 3, 4)))
        codec.std.copy_(z.std(dim=(0, 2, 3, 4)).clamp(min=1e-3))
    return float(loss.detach())


def flow_matching_loss(model: CausalWanModel, latents: torch.Tensor, context: torch.Tensor,
                       generator: torch.Generator, still: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between predicted and true flow (noise - x0); every chunk gets its own noise level. The first latent
    frame of the clips ``still`` (``[B]`` bool) marks is given clean, as a picture is, and not scored."""
    b, _, f = latents.shape[:3]
    chunks = f // model.config.chunk_frames
    u = torch.rand(b, chunks, generator=generator, device=latents.device)
    shift = TOY_SCHEDULE.shift  # train where the sampler spends its steps
    sigma = (shift * u / (1 + (shift - 1) * u)).repeat_interleave(model.config.chunk_frames, dim=1)  # [B, F]
    scored = torch.ones_like(sigma)  # [B, F]
    if still is not None:
        given = torch.zeros_like(sigma, dtype=torch.bool)
        given[:, 0] = still
        sigma, scored = sigma.masked_fill(given, 0.0), scored.masked_fill(given, 0.0)
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    s = sigma[:, None, :, None, None]
    noisy = (1 - s) * latents + s * noise
    flow = model.forward_teacher_forcing(latents, noisy, sigma * 1000, context)
    per_frame = (flow.float() - (noise - latents)).square().mean(dim=(1, 3, 4))  # [B, F]
    return (per_frame * scored).sum() / scored.sum()


def train(run_dir: Path, config: TrainConfig, time_budget: float, device: str = "cuda",
          init_from: Path | None = None, stop_requested: Callable[[], str | None] | None = None) -> dict:
    """Train (or resume) until ``config.steps``, ``time_budget`` seconds or ``stop_requested()`` answers (polled
    before each step); checkpoint on exit.

    ``init_from`` (a folder written by :func:`export`, e.g. the shipped weights) starts a new run from its EMA DiT
    and keeps its codec, so training goes on in the same latent space; an existing run in ``run_dir`` wins.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    torch.manual_seed(config.seed)
    model = CausalWanModel(WanConfig.from_name("toy")).to(dev)
    ema = CausalWanModel(WanConfig.from_name("toy")).to(dev).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99))
    codec = ToyAutoencoder().to(dev)
    state_path = run_dir / "state.pt"
    step = 0
    def make_data(seed: int) -> ToyData:
        return ToyData(dev, seed, config.caption_dropout, config.phrase_starts(), config.image_start)

    data = make_data(config.seed * 1_000_003)
    if state_path.exists():
        state = torch.load(state_path, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        codec.load_state_dict(state["codec"])
        step = int(state["step"])
        data = make_data(config.seed * 1_000_003 + step)
    elif init_from is not None:
        weights = {k: v.float() for k, v in load_file(str(init_from / "toy.safetensors"), device=str(dev)).items()}
        model.load_state_dict(weights)
        ema.load_state_dict(weights)
        codec.load_state_dict(load_file(str(init_from / "toy_codec.safetensors"), device=str(dev)))
        prior = json.loads((init_from / "toy.json").read_text()).get("training", {})
        (run_dir / "init.json").write_text(json.dumps({"init_from": str(init_from), "training": prior}))
    else:
        codec_loss = train_codec(codec, data, config.codec_seconds)
        print(f"codec reconstruction mse {codec_loss:.5f}", flush=True)
    codec.requires_grad_(False)
    generator = torch.Generator(dev).manual_seed(config.seed + step)
    schedule = lambda s: min(1.0, (s + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / config.steps)))  # noqa: E731
    began = time.time()
    log = open(run_dir / "loss.jsonl", "a")

    def save() -> None:  # write, fsync, rename: a crash leaves the previous checkpoint or this one
        tmp = state_path.with_suffix(".tmp")
        with open(tmp, "wb") as file:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                        "codec": codec.state_dict()}, file)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(state_path)

    running = []
    while step < config.steps and time.time() - began < time_budget and not (stop_requested and stop_requested()):
        for group in opt.param_groups:
            group["lr"] = config.lr * schedule(step)
        latents, context, still = data.batch(config.batch, codec)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = flow_matching_loss(model, latents, context, generator, still)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - config.ema)
        step += 1
        running.append(loss.detach())
        if step % config.log_every == 0:
            mean = float(torch.stack(running).mean())
            running.clear()
            log.write(json.dumps({"step": step, "loss": mean, "lr": config.lr * schedule(step),
                                  "elapsed": time.time() - began}) + "\n")
            log.flush()
            print(f"step {step} loss {mean:.4f}", flush=True)
        if step % config.save_every == 0:
            save()
    save()
    log.close()
    return {"step": step, "done": step >= config.steps}


def export(run_dir: Path, weights_dir: Path, config: TrainConfig) -> Path:
    """Write the EMA weights as fp16 safetensors plus a JSON sidecar (model config, schedule, codec, training)."""
    state = torch.load(run_dir / "state.pt", map_location="cpu", weights_only=True)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / "toy.safetensors"
    save_file({k: v.half().contiguous() for k, v in state["ema"].items()}, str(path))
    codec = {k: v.float().contiguous() for k, v in state["codec"].items()}
    save_file(codec, str(weights_dir / "toy_codec.safetensors"))
    meta = {
        "model": WanConfig.from_name("toy").to_dict(),
        "schedule": {**asdict(TOY_SCHEDULE), "steps": list(TOY_SCHEDULE.steps)},
        "codec": {"kind": "toy-autoencoder", "file": "toy_codec.safetensors"},
        "text": {"kind": "toy-words", "phrase_starts": list(config.phrase_starts())},
        "fps": 16, "frames_per_latent": 4, "latent_hw": [16, 16], "upscale": 4,
        "training": {"step": int(state["step"]), **asdict(config)},
    }
    if (run_dir / "init.json").is_file():  # warm-started: keep the history of the weights it started from
        meta["training"]["warm_started_from"] = json.loads((run_dir / "init.json").read_text())["training"]
    (weights_dir / "toy.json").write_text(json.dumps(meta, indent=2))
    return path
