"""The Wan2.1 VAE decoder (diffusers `AutoencoderKLWan`) with a streaming decode that carries its causal cache."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import CACHE_T, WanCausalConv3d, WanResample

from relaxforcing.checkpoints.files import read_checkpoint, tensors_only
from relaxforcing.checkpoints.fit import load_strict
from relaxforcing.checkpoints.wan_vae_names import is_original_vae_layout, vae_from_original
from relaxforcing.codecs.base import VAETiles, to_signed_video
from relaxforcing.model.wan import use_inductor_cache

LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
               0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
"""Per-channel mean of Wan2.1 VAE latents; the DiT works on (mu - mean) / std."""
LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
              3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
"""Per-channel std of Wan2.1 VAE latents."""
FRAMES_PER_LATENT = 4
"""VAE time stride: each latent after the first decodes to 4 frames, the first to 1."""
SPACE_RATIO = 8
"""VAE space stride: each latent cell covers 8x8 pixels."""

WAN21_VAE_CONFIG: dict = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "latents_mean": list(LATENT_MEAN),
    "latents_std": list(LATENT_STD),
}
"""`AutoencoderKLWan` arguments of ``Wan2.1_VAE.pth`` (the diffusers defaults, written out so they stay local)."""


def load_wan_vae(
    path: str | Path,
    config: dict | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> AutoencoderKLWan:
    """Load the Wan2.1 VAE from local files only.

    Args:
        path: Wan's ``Wan2.1_VAE.pth`` (original key names; read weights-only), a state-dict file under either
            naming, or a diffusers ``vae/`` folder (``config.json`` + weights).
        config: `AutoencoderKLWan` arguments overriding :data:`WAN21_VAE_CONFIG` (single-file checkpoints only).
        dtype: parameter dtype.
        device: parameter device.

    Raises:
        CheckpointError: unreadable or unsafe file, or tensors that do not fit the config.
    """
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        if config is not None:
            raise ValueError(f"{path} carries its own config.json; config= applies to single files only")
        return AutoencoderKLWan.from_pretrained(path, local_files_only=True, torch_dtype=dtype).to(device).eval()
    kwargs = {**WAN21_VAE_CONFIG, **(config or {})}
    state = tensors_only(read_checkpoint(path), path)
    if is_original_vae_layout(list(state)):
        state = vae_from_original(state, kwargs["num_res_blocks"])
    with torch.device("meta"):
        vae = AutoencoderKLWan(**kwargs)
    sizes = {k: v for k, v in kwargs.items() if not k.startswith("latents_")}
    load_strict(vae, state, f"AutoencoderKLWan({sizes})", path, dtype, device)
    return vae.eval()


def to_uint8_frames(pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 3, T, H, W]`` in [-1, 1] -> ``[B, T, H, W, 3]`` uint8 (rounded)."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)


class WanVAEDecoder:
    """Decodes normalised DiT latents to uint8 video, whole or chunk by chunk.

    Pixel frames: the first latent gives 1 frame, every later latent 4, so F latents give 1 + 4(F - 1).
    """

    space_ratio = SPACE_RATIO

    def __init__(self, vae: AutoencoderKLWan, channels_last: bool | None = None, tiles: VAETiles | None = None,
                 compiled: bool = False):
        """``channels_last`` stores the decoder's 3-D convolution weights channels-last, which lets cuDNN skip a
        layout conversion per call (232 vs 274 ms per 832x480 chunk on an H200); default: on CUDA. ``tiles``: the
        streaming decoders' spatial tiles (None: whole frames). ``compiled``: untiled streaming decoders run the up
        blocks and ``conv_out`` of each latent frame as one function compiled by ``torch.compile`` (inductor fuses
        the norms, activations and cache copies between the convolutions), from the stream's second chunk on, once
        the causal caches have their steady shapes: one graph."""
        cfg = vae.config
        if cfg.patch_size is not None or cfg.is_residual:
            raise ValueError(f"only the Wan2.1 VAE is supported (got patch_size={cfg.patch_size}, "
                             f"is_residual={cfg.is_residual}: a Wan2.2 VAE)")
        self.vae = vae
        self.tiles = tiles
        self.compiled = compiled
        param = next(vae.parameters())
        if param.is_cuda if channels_last is None else channels_last:
            for weight in vae.decoder.parameters():
                if weight.dim() == 5:  # [out, in, t, h, w] convolution kernels
                    weight.data = weight.data.contiguous(memory_format=torch.channels_last_3d)
        self.mean = torch.tensor(cfg.latents_mean, device=param.device, dtype=param.dtype).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, device=param.device, dtype=param.dtype).view(1, -1, 1, 1, 1)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """DiT latents ``[B, z, f, h, w]`` -> VAE latents z * std + mean, in the VAE's dtype and device."""
        if latents.ndim != 5 or latents.shape[1] != self.mean.shape[1]:
            raise ValueError(f"latents must be [B, {self.mean.shape[1]}, f, h, w], got {list(latents.shape)}")
        return latents.to(self.mean) * self.std + self.mean

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``[B, 1 + 4(F-1), H, W, 3]`` -> normalised DiT latents ``[B, z, F, H/8, W/8]`` (float32): the
        posterior mean, ``(mu - mean) / std``, the first frame encoded alone as in Self-Forcing's ``--i2v``."""
        if frames.ndim != 5 or (frames.shape[1] - 1) % FRAMES_PER_LATENT:
            raise ValueError(f"the Wan VAE encodes 1 + 4k frames [B, T, H, W, 3], got {list(frames.shape)}")
        pixels = to_signed_video(frames).transpose(1, 2).to(self.mean)  # [B, 3, T, H, W]
        mu = self.vae.encode(pixels).latent_dist.mean
        return ((mu - self.mean) / self.std).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """A whole latent video ``[B, z, F, h, w]`` -> frames ``[B, 1 + 4(F-1), 8h, 8w, 3]`` uint8."""
        return to_uint8_frames(self.vae.decode(self.denormalize(latents)).sample)

    def chunk_decoder(self) -> VAEChunkDecoder:
        """A fresh streaming decoder: over consecutive chunks it gives :meth:`decode` of their concatenation
        (to float rounding: the 1x1x1 post-quant conv runs per chunk, so a uint8 value may differ by 1), tiled
        or not."""
        return VAEChunkDecoder(self, self.tiles)

    def with_tiles(self, tiles: VAETiles | None) -> WanVAEDecoder:
        """This codec (the same VAE) with streaming decoders tiled by ``tiles`` (None: whole frames)."""
        codec = copy.copy(self)
        codec.tiles = tiles
        return codec

    def with_compiled(self, compiled: bool = True) -> WanVAEDecoder:
        """This codec (the same VAE) with untiled streaming decoders compiled or not (see ``compiled``)."""
        if compiled:
            use_inductor_cache()
        codec = copy.copy(self)
        codec.compiled = compiled
        return codec

    def video_frames(self, latent_frames: int) -> int:
        """``1 + 4(F - 1)``: the first latent decodes to 1 frame, every later one to 4."""
        if latent_frames < 1:
            raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
        return 1 + FRAMES_PER_LATENT * (latent_frames - 1)


class VAEChunkDecoder:
    """Chunk-by-chunk decoding that keeps the decoder's causal-conv feature cache between calls.

    Runs diffusers' decoder modules as `WanDecoder3d.forward` does (one latent frame per call, a list of per-conv
    caches indexed in call order; Wan2.1's up blocks ignore ``first_chunk``), on caches owned by this object, in two
    parts: the head (``conv_in`` and the mid block, whose attention spans the whole frame) on whole latent frames,
    then the up blocks and ``conv_out``, which only mix neighbouring pixels, per tile of ``tiles``. Each tile keeps
    its own caches, sized to its region, and is decoded with a margin as wide as the rest of the decoder's reach
    (13 latent cells before the first up block, trimmed after every residual block and upsampler down to 1 pixel
    before ``conv_out``), so its pixels equal the untiled decode's to float rounding; one tile's activations are
    alive at a time.
    """

    def __init__(self, decoder: WanVAEDecoder, tiles: VAETiles | None = None):
        self.decoder = decoder
        self.tiles = tiles
        net = decoder.vae.decoder
        # One slot per causal conv, as `AutoencoderKLWan.clear_cache` sizes it (1x1x1 shortcuts leave theirs unused);
        # a slot holds the conv's last input frames, or diffusers' "Rep" marker after the first latent.
        self._slots = sum(isinstance(m, WanCausalConv3d) for m in net.modules())
        self._head_slots = 1 + sum(isinstance(m, WanCausalConv3d) for m in net.mid_block.modules())
        self._steps = [step for block in net.up_blocks for step in [*block.resnets, *(block.upsamplers or [])]]
        """The up blocks' residual blocks and upsamplers, in order (what `WanUpBlock.forward` runs)."""
        self._margins = _margins(self._steps, net.conv_out)
        self._head: list = [None] * self._slots
        """The head's slots (``conv_in``, mid block); untiled, the up blocks' too."""
        self._tiles: list[list] = []
        """Per tile, the up blocks' and ``conv_out``'s slots (untiled: ``[self._head]``)."""
        self._layout: list[tuple[int, int, int, int]] | None = None
        """Latent (top, bottom, left, right) of each tile; set by the first chunk (one tile when untiled)."""
        self._batch: int | None = None
        self._up = self._tail
        """The up path of one latent frame on one tile at steady state; compiled when the decoder asks and decodes
        whole frames (each tile's shapes would take a graph of their own)."""
        if decoder.compiled and tiles is None:
            self._up = torch.compile(self._tail, dynamic=False)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The next chunk ``[B, z, f, h, w]`` (normalised) -> its frames ``[B, T, 8h, 8w, 3]`` uint8.

        T = 1 + 4(f - 1) for the first chunk of the stream and 4f afterwards.
        """
        return to_uint8_frames(self.decode_pixels(latents))

    @torch.no_grad()
    def decode_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """As :meth:`decode`, but pixels ``[B, 3, T, 8h, 8w]`` in [-1, 1], in the VAE's dtype."""
        if latents.ndim != 5 or latents.shape[2] < 1:
            raise ValueError(f"a chunk must be [B, z, f>=1, h, w], got {list(latents.shape)}")
        if self._batch is not None and latents.shape[0] != self._batch:
            raise ValueError(f"batch size changed mid-stream: {latents.shape[0]} after {self._batch}")
        h, w = latents.shape[-2:]
        if self._layout is None:
            self._layout = self.tiles.layout(h, w) if self.tiles is not None else [(0, h, 0, w)]
        elif (self._layout[-1][1], self._layout[-1][3]) != (h, w):
            raise ValueError(f"latent frame size changed mid-stream: {h}x{w} after "
                             f"{self._layout[-1][1]}x{self._layout[-1][3]}")
        if not self._tiles:
            self._tiles = [self._head] if len(self._layout) == 1 else [[None] * self._slots for _ in self._layout]
        steady = self._steady()  # at the call's start: a call that begins the stream decodes eagerly throughout
        net = self.decoder.vae.decoder
        x = self.decoder.vae.post_quant_conv(self.decoder.denormalize(latents))  # 1x1x1 conv: no temporal state
        heads = []  # per latent frame [B, C, 1, h, w]: the mid block's output on the whole frame
        for i in range(x.shape[2]):
            index = [1]
            y = _cached_conv(net.conv_in, x[:, :, i:i + 1], self._head, 0)
            heads.append(net.mid_block(y, feat_cache=self._head, feat_idx=index))
        self._batch = latents.shape[0]
        if len(self._layout) == 1:
            frames = [(self._up if steady else self._tail)(y, self._head, (0, h, 0, w), (h, w)) for y in heads]
            return torch.cat(frames, dim=2).clamp(-1, 1)
        canvas = None  # [B, 3, T, 8h, 8w]
        for tile, cache in zip(self._layout, self._tiles, strict=True):
            top, bottom, left, right = (SPACE_RATIO * c for c in tile)
            frames = [self._tail(y, cache, tile, (h, w)) for y in heads]
            pixels = torch.cat(frames, dim=2)  # [B, 3, T, 8th, 8tw]
            if canvas is None:
                canvas = pixels.new_empty((*pixels.shape[:3], SPACE_RATIO * h, SPACE_RATIO * w))
            canvas[..., top:bottom, left:right] = pixels
            del frames, pixels
        return canvas.clamp_(-1, 1)

    def _steady(self) -> bool:
        """Whether every cache holds its steady shape (after the stream's first two latent frames: the first leaves
        1-frame caches and the upsamplers' "Rep" marker, the second replaces them), so the up path takes the one
        graph the compiled decode is built for. Checked as a call starts, so the calls that begin the stream (its
        first chunk, or that chunk's first latent frame and then the rest) run eagerly and their frames do not wait
        for a compilation; the steady graph compiles on the next chunk, which the DiT's work overlaps."""
        return self._head[0] is not None and not any(isinstance(entry, str) for entry in self._head)

    def _tail(self, y: torch.Tensor, cache: list, tile: tuple[int, int, int, int], hw: tuple[int, int]
              ) -> torch.Tensor:
        """The head's output ``[B, C, 1, h, w]`` -> pixels ``[B, 3, t, 8th, 8tw]`` of ``tile`` (unclamped): the up
        blocks and ``conv_out`` on the tile and a margin of its neighbours, trimmed as the reach left shrinks."""
        net = self.decoder.vae.decoder
        index, scale, held = [self._head_slots], 1, (0, hw[0], 0, hw[1])  # held: the region y covers, at scale
        for step, margin in zip([*self._steps, None], self._margins, strict=True):
            want = _grow(tile, scale, margin, hw)
            y = y[..., want[0] - held[0]:want[1] - held[0], want[2] - held[2]:want[3] - held[2]]
            held = want
            if step is None:
                break
            if isinstance(step, WanResample):  # 2x up
                y = _upsample(step, y, cache, index)
                scale, held = 2 * scale, tuple(2 * c for c in held)
            else:
                y = step(y, feat_cache=cache, feat_idx=index)
        y = _cached_conv(net.conv_out, net.nonlinearity(net.norm_out(y)), cache, index[0])
        return y[..., tile[0] * scale - held[0]:tile[1] * scale - held[0],
                 tile[2] * scale - held[2]:tile[3] * scale - held[2]]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The causal-conv caches as CPU tensors: ``cache.i`` for a held tensor, an empty ``rep.i`` for diffusers'
        "Rep" marker, nothing for an unused slot; ``batch`` once decoding has begun. Tiled: the layout ``tiles``
        ``[n, 4]`` (latent top, bottom, left, right), and the up blocks' slots of tile k under ``tile{k}.``."""
        state = {"slots": torch.tensor(self._slots)}
        if self._batch is not None:
            state["batch"] = torch.tensor(self._batch)
        caches = {"": self._head}
        if len(self._tiles) > 1:
            state["tiles"] = torch.tensor(self._layout)
            caches |= {f"tile{k}.": cache for k, cache in enumerate(self._tiles)}
        for prefix, cache in caches.items():
            for i, entry in enumerate(cache):
                if isinstance(entry, torch.Tensor):
                    state[f"{prefix}cache.{i}"] = entry.cpu()
                elif entry == "Rep":
                    state[f"{prefix}rep.{i}"] = torch.empty(0)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a stream with the tiling it was saved with, whatever ``tiles`` this decoder has, so that it goes
        on as it would have (a stream saved before its first chunk takes this decoder's tiling)."""
        if int(state["slots"]) != self._slots:
            raise ValueError(f"the saved VAE decoder state has {int(state['slots'])} conv slots, this VAE "
                             f"{self._slots}")
        device = self.decoder.mean.device

        def slots(prefix: str) -> list:
            return [state[f"{prefix}cache.{i}"].to(device) if f"{prefix}cache.{i}" in state else
                    "Rep" if f"{prefix}rep.{i}" in state else None for i in range(self._slots)]

        self._batch = int(state["batch"]) if "batch" in state else None
        self._head = slots("")
        self._layout = [tuple(t) for t in state["tiles"].tolist()] if "tiles" in state else None
        if self._layout is not None:
            self._tiles = [slots(f"tile{k}.") for k in range(len(self._layout))]
        elif self._batch is not None:
            self.tiles, self._tiles = None, [self._head]  # saved untiled: the next chunk lays out one tile
        else:
            self._tiles = []


def _cached_conv(conv: WanCausalConv3d, x: torch.Tensor, cache: list, idx: int) -> torch.Tensor:
    """``conv`` on ``x`` ``[B, C, 1, h, w]`` with slot ``idx`` of ``cache``, as `WanDecoder3d.forward` runs its
    ``conv_in`` and ``conv_out``."""
    cache_x = x[:, :, -CACHE_T:].clone()
    if cache_x.shape[2] < 2 and cache[idx] is not None:  # keep the last frame of the previous call too
        cache_x = torch.cat([cache[idx][:, :, -1:].to(cache_x.device), cache_x], dim=2)
    y = conv(x, cache[idx])
    cache[idx] = cache_x
    return y


def _upsample(step: WanResample, x: torch.Tensor, cache: list, index: list[int]) -> torch.Tensor:
    """`WanResample.forward` of one of the decoder's 2x upsamplers on ``x`` ``[B, C, t, h, w]``, with the "Rep" slot
    marker (an upsampler that has seen only the first latent frame, which is not doubled in time) tested by type.
    diffusers compares the slot with the string, and when the slot holds a tensor torch.compile (2.11) cannot trace
    ``tensor == "Rep"``: it breaks the graph there and falls back to compiling each residual block on its own."""
    b, c, t, h, w = x.shape
    if step.mode == "upsample3d":
        held = cache[index[0]]
        if held is None:
            cache[index[0]] = "Rep"
        else:
            rep = isinstance(held, str)
            fresh = x[:, :, -CACHE_T:].clone()
            if fresh.shape[2] < 2:  # keep the last frame of the previous call too (zeros after the first frame)
                fresh = torch.cat([torch.zeros_like(fresh) if rep else held[:, :, -1:].to(fresh.device), fresh], dim=2)
            x = step.time_conv(x) if rep else step.time_conv(x, held)  # [B, 2C, t, h, w]
            cache[index[0]] = fresh
            x = torch.stack((x[:, :c], x[:, c:]), dim=3).reshape(b, c, 2 * t, h, w)  # halves interleaved in time
        index[0] += 1
    t = x.shape[2]
    x = step.resample(x.transpose(1, 2).reshape(b * t, c, h, w))  # [B*t, C', 2h, 2w]
    return x.view(b, t, *x.shape[1:]).transpose(1, 2)


def _margins(steps: list[torch.nn.Module], conv_out: WanCausalConv3d) -> list[int]:
    """Pixels each of ``steps`` (residual blocks and 2x upsamplers), then ``conv_out``, needs around a region at its
    input scale for every pixel of the region to come out as on the whole frame: each 3x3 conv reaches one pixel
    further, and a 2x nearest-neighbour resize halves the reach behind it (Wan2.1: 13 latent cells before the first
    up block, 7 pixels before the last, 1 before ``conv_out``)."""
    margins = [conv_out.kernel_size[1] // 2]
    for step in reversed(steps):
        if isinstance(step, WanResample):
            reach = math.ceil((margins[0] + step.resample[1].kernel_size[0] // 2) / 2)
        else:
            reach = margins[0] + sum(m.kernel_size[1] // 2 for m in step.modules() if isinstance(m, WanCausalConv3d))
        margins.insert(0, reach)
    return margins


def _grow(tile: tuple[int, int, int, int], scale: int, margin: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """``tile`` (latent cells) at ``scale`` pixels per cell, widened by ``margin`` pixels within the frame ``hw``."""
    top, bottom, left, right = (scale * c for c in tile)
    return (max(0, top - margin), min(scale * hw[0], bottom + margin),
            max(0, left - margin), min(scale * hw[1], right + margin))
