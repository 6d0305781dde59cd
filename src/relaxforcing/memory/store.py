"""FrameStore: per-layer un-roped K/V of committed latent frames — pinned sinks plus a ring of recent frames."""

from __future__ import annotations

import torch

from relaxforcing.memory.reader import MemoryReader
from relaxforcing.memory.view import MemoryView
from relaxforcing.model.wan import MemoryKV


class FrameStore:
    """Static buffers holding, for every layer, the keys (after qk-norm, before RoPE) and values of frames.

    Frames ``0 .. sink_frames-1`` live in pinned slots forever. Later frames live in a ring of ``ring_frames``
    slots: frame g goes to slot ``sink_frames + (g - sink_frames) % ring_frames``, so the store only holds what
    a policy that reads at most ``ring_frames`` frames behind the current chunk can still need. Reading an
    evicted frame raises. The layer-0 frame prototype (mean of keys over tokens, then heads) is kept per frame.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        batch: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        sink_frames: int,
        ring_frames: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        if ring_frames < 1 or sink_frames < 0:
            raise ValueError(f"ring_frames={ring_frames} must be >= 1 and sink_frames={sink_frames} >= 0")
        self.sink_frames = sink_frames
        self.ring_frames = ring_frames
        self.tokens_per_frame = tokens_per_frame
        slots = sink_frames + ring_frames
        shape = (num_layers, batch, slots, tokens_per_frame, num_heads, head_dim)  # [L, B, S, T, H, D]
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.prototype_sums = torch.zeros(batch, slots, head_dim, dtype=torch.float32, device=device)  # [B, S, D]
        self.slot_frame = [-1] * slots  # global frame held by each slot (-1 = empty), host-side bookkeeping
        self.num_frames = 0  # frames committed so far; the next chunk starts here
        self._reader = MemoryReader()  # its workspace, reused from chunk to chunk

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def slot(self, frame: int) -> int:
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.ring_frames

    def holds(self, frame: int) -> bool:
        return 0 <= frame < self.num_frames and self.slot_frame[self.slot(frame)] == frame

    def slots(self, frames: torch.Tensor) -> torch.Tensor:
        """Slot of each frame in ``frames`` (any shape, CPU long); raises if a frame is not held."""
        flat = frames.flatten().tolist()
        missing = sorted({f for f in flat if not self.holds(f)})
        if missing:
            raise RuntimeError(f"frames {missing[:8]} are not in the store (committed {self.num_frames}, "
                               f"sinks {self.sink_frames}, ring {self.ring_frames}): the policy's max_lag is wrong")
        return torch.tensor([self.slot(f) for f in flat], dtype=torch.long).reshape(frames.shape)

    def commit(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Write a chunk's per-layer keys/values ``[B, f*T, H, D]`` (frames ``start..start+f-1``)."""
        if start != self.num_frames:
            raise ValueError(f"chunk starts at frame {start} but the store expects frame {self.num_frames}")
        self._write(start, keys, values)
        self.num_frames = start + keys[0].shape[1] // self.tokens_per_frame

    def rewrite(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Overwrite frames ``start..`` already held (e.g. re-encoded under a new prompt) with ``keys``/``values``
        ``[B, f*T, H, D]`` per layer; what is committed does not change."""
        frames = range(start, start + keys[0].shape[1] // self.tokens_per_frame)
        if not all(self.holds(f) for f in frames):
            raise ValueError(f"cannot rewrite frames {frames.start}..{frames.stop - 1}: not all are held")
        self._write(start, keys, values)

    def _write(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        frames = keys[0].shape[1] // self.tokens_per_frame
        for i in range(frames):
            frame, slot = start + i, self.slot(start + i)
            rows = slice(i * self.tokens_per_frame, (i + 1) * self.tokens_per_frame)
            for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
                self.k[layer, :, slot] = k[:, rows]
                self.v[layer, :, slot] = v[:, rows]
            self.prototype_sums[:, slot] = keys[0][:, rows].float().mean(dim=(1, 2))
            self.slot_frame[slot] = frame

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        """L2-normalised layer-0 key prototype of the union of ``frames`` ``[B, n]`` per sample -> ``[B, D]``."""
        slots = self.slots(frames).to(self.prototype_sums.device)
        rows = torch.arange(self.batch, device=slots.device)[:, None]
        mean = self.prototype_sums[rows, slots].mean(dim=1)  # equal token counts: mean of means = joint mean
        return torch.nn.functional.normalize(mean, dim=-1)

    def gather(self, layer: int, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``frames`` ``[B, N]`` for one layer, as ``[B, N*T, H, D]``."""
        slots = self.slots(frames).to(self.k.device)
        rows = torch.arange(self.batch, device=slots.device)[:, None]
        return self.k[layer, rows, slots].flatten(1, 2), self.v[layer, rows, slots].flatten(1, 2)

    def read(self, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        """The rotated keys/values a chunk attends to under ``view``, in the store's reused workspace (valid until
        the next read); None when the view attends no cached frame."""
        return self._reader.read(self, view, grid_hw, head_dim)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The buffers, for a snapshot (with :meth:`state_meta`)."""
        return {"k": self.k, "v": self.v, "prototype_sums": self.prototype_sums}

    def state_meta(self) -> dict:
        return {"num_frames": self.num_frames, "slot_frame": list(self.slot_frame)}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a snapshot into this store, which must have been built with the same sizes."""
        for name, buffer in self.state_tensors().items():
            saved = tensors.get(name)
            if saved is None or saved.shape != buffer.shape or saved.dtype != buffer.dtype:
                found = "nothing" if saved is None else f"{saved.dtype} {list(saved.shape)}"
                raise ValueError(f"the saved frame store's {name} is {found}, this run needs "
                                 f"{buffer.dtype} {list(buffer.shape)} (another model, size or policy?)")
            buffer.copy_(saved)
        if len(meta["slot_frame"]) != len(self.slot_frame):
            raise ValueError(f"the saved frame store has {len(meta['slot_frame'])} slots, this one "
                             f"{len(self.slot_frame)}")
        self.slot_frame = [int(f) for f in meta["slot_frame"]]
        self.num_frames = int(meta["num_frames"])

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes + self.prototype_sums.nbytes
