"""MemRoPE (arXiv 2603.12513): sinks, a long and a short EMA of the frames that leave the window, recent frames.

Rule (YoungRaeKimm/MemRoPE @b89bf5b, ``wan/modules/causal_model.py``: ``CausalWanSelfAttention.forward`` L398-634
with ``compression_method='ema'`` and L704-771 (direct insert), ``CausalWanModel._apply_cache_updates`` L1280-1379;
configs ``configs/selfforcing/memrope_{30s..480s}.yaml``: ``local_attn_size 12, sink_size 3, use_block_rope true,
ema_alpha_long 0.01, ema_alpha_short 0.1``, ``ema_adaptive`` False):

* A ``window``-frame cache (12) of un-roped keys laid out ``[sink 3 | long EMA 1 | short EMA 1 | recent 4 | chunk 3]``,
  recent = window - sink - 2 - f (the config's ``recent_size`` is not read by this branch).
* Warm-up (``t + f <= window``): every frame so far at its own position ``0..t-1``, the chunk at ``t..t+f-1``.
* From ``t = window`` on, once per chunk (its first denoising step), the f frames leaving the recent window
  (``t-recent-f .. t-recent-1``) are pooled into one frame: the mean of their keys (values) over all their tokens,
  per head and channel, broadcast over the frame's tokens; then ``long = a_long * pooled + (1 - a_long) * long``,
  ``short`` likewise with ``a_short``. The first such chunk (t = window) sets both slots to the pooled frame.
* Positions (Block-Relativistic RoPE): the cache at ``0..window-f-1`` in the order above, the chunk at
  ``window-f..window-1``; keys are stored un-roped and rotated when read.
* ``adaptive=true`` (the code's ``ema_adaptive``): pooled per token position over the f frames (not broadcast), and
  the short slot's rate per token: ``a_short * (0.1 + 4.9 m)``, m = ||pooled - short||_2 over channels, averaged
  over heads, divided by its maximum over tokens (+1e-8); the long slot keeps ``a_long``.

Where the code and the paper's "each evicted frame updates both EMA slots" differ, ours follows the code: one update
per chunk with the pool of its f evicted frames, and frames ``sink`` and ``sink+1`` (which occupy the EMA slots
during warm-up) are dropped without being folded in. EMA arithmetic runs in the store's dtype, as the authors' runs in
their cache's (bf16 on GPU).

Ours keeps the two EMA slots as the store's synthesised frames (``MemoryView.folds``: frames -1 ``ema_long`` and
-2 ``ema_short`` in views and traces, each trace entry listing the frames that chunk folded in), so they survive
snapshots, offloading and replay like stored frames. The store pins the sinks and rings the 7 frames a chunk reads
or folds: max_lag = window - sink - 2 (the folded frames are the oldest read).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.view import Fold, MemoryView

LONG, SHORT = 0, 1
"""The synthesised frames (EMA slots), named ``-1`` and ``-2`` in views."""


@dataclass(frozen=True)
class EmaFold:
    """One EMA slot's update from the f frames leaving the window (a :data:`~relaxforcing.memory.view.FoldRule`)."""

    alpha: float
    first: bool
    """The first fold: the slot becomes the pooled frame."""
    adaptive: bool
    """Pool per token position instead of over every token."""
    motion: bool
    """Per-token rate from motion (the adaptive short slot)."""

    def __call__(self, k: torch.Tensor, v: torch.Tensor, frame_keys: torch.Tensor, frame_values: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot ``k``, ``v`` ``[B, T, H, D]`` after folding in frames ``[B, f, T, H, D]``."""
        pooled_k, pooled_v = self.pool(frame_keys), self.pool(frame_values)  # [B, T, H, D]
        if self.first:
            return pooled_k, pooled_v
        alpha: float | torch.Tensor = self.alpha
        if self.motion:
            motion = (pooled_k - k).norm(dim=-1).mean(dim=-1)  # [B, T]
            motion = motion / (motion.max(dim=-1, keepdim=True).values + 1e-8)
            low, high = self.alpha * 0.1, self.alpha * 5.0
            alpha = (low + motion * (high - low))[..., None, None]  # [B, T, 1, 1]
        return alpha * pooled_k + (1 - alpha) * k, alpha * pooled_v + (1 - alpha) * v

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, f, T, H, D]`` -> ``[B, T, H, D]``."""
        if self.adaptive:
            return frames.mean(dim=1)
        tokens = frames.shape[2]
        return frames.flatten(1, 2).mean(dim=1, keepdim=True).expand(-1, tokens, -1, -1)


@dataclass(frozen=True)
class MemRoPEPolicy(MemoryPolicy):
    name = "memrope"
    sink: int = 3
    window: int = 12
    alpha_long: float = 0.01
    alpha_short: float = 0.1
    adaptive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        f = self.chunk_frames
        if self.sink < 0 or self.window % f or self.window < self.sink + 2 + f:
            raise ValueError(f"memrope: window={self.window} must be a multiple of the chunk size {f} and hold "
                             f"sink={self.sink} (>= 0) + 2 EMA slots + the chunk")
        if not (0 < self.alpha_long <= 1 and 0 < self.alpha_short <= 1):
            raise ValueError(f"memrope: alpha_long={self.alpha_long} and alpha_short={self.alpha_short} must be in "
                             "(0, 1]")

    @property
    def recent(self) -> int:
        """Stored frames attended after the EMA slots (4)."""
        return self.window - self.sink - 2 - self.chunk_frames

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        return max(self.recent + self.chunk_frames, self.window - self.chunk_frames - self.sink)

    @property
    def synthesised_frames(self) -> int:
        return 2

    def evicted(self, start: int) -> range:
        """Frames folded into the EMA slots by the chunk at ``start`` (from ``start = window`` on)."""
        return range(start - self.recent - self.chunk_frames, start - self.recent)

    def select(self, store: StoreView, start: int) -> MemoryView:
        f, batch = self.chunk_frames, store.batch
        if start + f <= self.window:  # warm-up: the cache holds every frame at its own position
            frames = list(range(start))
            roles = ["sink" if i < self.sink else "window" for i in frames]
            return MemoryView.shared(start, batch, frames, frames, roles, self.queries(start))
        frames = [*range(self.sink), -1 - LONG, -1 - SHORT, *range(start - self.recent, start)]
        roles = ["sink"] * self.sink + ["ema_long", "ema_short"] + ["tail"] * self.recent
        view = MemoryView.shared(start, batch, frames, range(len(frames)), roles, range(self.window - f, self.window))
        evicted = torch.tensor(list(self.evicted(start))).repeat(batch, 1)  # [B, f]
        first = start == self.window
        folds = (Fold(LONG, evicted, EmaFold(self.alpha_long, first, self.adaptive, motion=False)),
                 Fold(SHORT, evicted, EmaFold(self.alpha_short, first, self.adaptive, motion=self.adaptive)))
        return replace(view, folds=folds)
