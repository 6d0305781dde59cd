"""Configuration of the causal Wan2.1 DiT, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class WanConfig:
    """Hyper-parameters of a Wan2.1 text-to-video DiT (original Wan names where they exist)."""

    dim: int = 1536
    """Hidden width of every block."""
    ffn_dim: int = 8960
    """Hidden width of the feed-forward network."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep embedding."""
    num_heads: int = 12
    """Attention heads; head_dim = dim / num_heads."""
    num_layers: int = 30
    """Number of transformer blocks."""
    in_dim: int = 16
    """Latent channels in."""
    out_dim: int = 16
    """Latent channels out."""
    text_dim: int = 4096
    """Width of the text-encoder output (umT5-XXL: 4096)."""
    text_len: int = 512
    """Text tokens the model attends to; shorter contexts are zero-padded to this length."""
    patch_size: tuple[int, int, int] = (1, 2, 2)
    """Patch size (frames, height, width) of the patch embedding."""
    eps: float = 1e-6
    """Epsilon of the layer and RMS norms."""
    chunk_frames: int = 3
    """Latent frames denoised together (block-causal chunk)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "eps":
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                    raise ValueError(f"eps={value!r} must be a number in (0, 1)")
            elif f.name == "patch_size":
                if not isinstance(value, tuple | list) or len(value) != 3 or not all(_is_count(p) for p in value):
                    raise ValueError(f"patch_size={value!r} must be three whole numbers >= 1 (frames, height, width)")
            elif not _is_count(value):
                raise ValueError(f"{f.name}={value!r} must be a whole number >= 1")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim={self.head_dim} must be even and >= 6 for 3D RoPE")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict:
        return {**asdict(self), "patch_size": list(self.patch_size)}

    @classmethod
    def from_dict(cls, data: dict) -> WanConfig:
        """Build from a dict such as Wan's `config.json`; unknown keys (e.g. `_class_name`) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "patch_size" else v) for k, v in data.items() if k in names})

    @classmethod
    def from_name(cls, name: str) -> WanConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
        return PRESETS[name]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


PRESETS: dict[str, WanConfig] = {
    "wan2.1-t2v-1.3b": WanConfig(),
    "wan2.1-t2v-14b": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    # Embedded toy model on the learned toy codec's latents: 16 channels on a 16x16 grid, 2x2 patches -> 64 tokens
    # per latent frame, the Wan geometry at 1/24 of the tokens.
    "toy": WanConfig(dim=256, ffn_dim=1024, num_heads=4, num_layers=6, in_dim=16, out_dim=16,
                     text_dim=64, text_len=24),
    # Test sizes: two layers, two heads.
    "tiny": WanConfig(dim=32, ffn_dim=64, freq_dim=16, num_heads=2, num_layers=2, in_dim=4, out_dim=4,
                      text_dim=8, text_len=6),
}
