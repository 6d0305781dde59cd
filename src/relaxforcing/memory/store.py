"""FrameStore: per-layer un-roped K/V of committed latent frames — pinned sinks plus a ring of recent frames — on
the device, or with offloading in host memory with only what chunks attend on the device."""

from __future__ import annotations

import torch

from relaxforcing.devices import upload
from relaxforcing.memory.host import HostSlots, StagedCopies
from relaxforcing.memory.reader import MemoryReader
from relaxforcing.memory.view import MemoryView
from relaxforcing.model.rope import apply_rope, rope_factors, rotation_dtype
from relaxforcing.model.wan import MemoryKV

OFFLOAD_MODES = ("none", "history", "all")
"""Where a store keeps frames: ``none`` all on the device; ``history`` every frame in host memory, with the sinks
and the most recent frames also on the device and older frames copied in when a chunk attends them; ``all`` every
frame in host memory, each attended frame copied in per chunk."""

FOLD_LAYERS = 6
"""Layers a fold gathers and updates at once (one batch of ``6 x B`` frames' rows: few launches, little memory)."""


class FrameStore:
    """Static buffers holding, for every layer, the keys (after qk-norm, before RoPE) and values of frames.

    Frames ``0 .. sink_frames-1`` are kept forever. Later frames go to a ring of ``ring_frames`` slots: frame g
    takes slot ``sink_frames + (g - sink_frames) % ring_frames`` (:meth:`slot`), so the store only holds what a
    policy that reads at most ``ring_frames`` frames behind the current chunk can still need. Reading an evicted
    frame raises. The layer-0 frame prototype (mean of keys over tokens, then heads) is kept per frame on the device.

    With ``offload="none"`` the slots are the device buffers :attr:`k` / :attr:`v` ``[L, B, S, T, H, D]``. Otherwise
    every frame's slot is in host memory (one page-locked block per slot, see :class:`HostSlots`), and the
    device holds ``[sinks (history only) | staging | recent ring]``: the newest ``recent_frames`` frames (written
    there at commit), and ``staging_frames`` slots into which :meth:`locate` copies any other frame a chunk
    attends. Writes to host memory run on a copy stream beside the model; nothing waits on the host.

    With ``rotated_grid`` (the token grid of a frame), keys are stored rotated at their own frame's position from the
    moment they are written (write-time RoPE, for policies with ``absolute_positions``): a chunk that attends every
    frame of a prefix of the slots reads keys and values where they lie, with no workspace.

    A policy's ``synthesised_frames`` (frames made by folding stored frames in, e.g. MemRoPE's EMA slots) live on the
    device after every other slot, whatever the offloading; views name synthesised frame s as frame ``-1-s``, and a
    read applies the view's :class:`~relaxforcing.memory.view.Fold` s first, once per chunk.
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
        offload: str = "none",
        recent_frames: int = 0,
        staging_frames: int = 0,
        synthesised_frames: int = 0,
        rotated_grid: tuple[int, int] | None = None,
    ):
        if ring_frames < 1 or sink_frames < 0:
            raise ValueError(f"ring_frames={ring_frames} must be >= 1 and sink_frames={sink_frames} >= 0")
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"offload={offload!r}: choose one of {', '.join(OFFLOAD_MODES)}")
        self.sink_frames = sink_frames
        self.ring_frames = ring_frames
        self.tokens_per_frame = tokens_per_frame
        if rotated_grid is not None and rotated_grid[0] * rotated_grid[1] != tokens_per_frame:
            raise ValueError(f"rotated_grid {rotated_grid} does not hold {tokens_per_frame} tokens per frame")
        self.rotated_grid = rotated_grid
        self._write_rope: tuple[int, torch.Tensor] | None = None  # (first frame, rotation) of the write under way
        self.offload = offload
        self.device = torch.device(device)
        slots = sink_frames + ring_frames
        self._frame_shape = (num_layers, batch, tokens_per_frame, num_heads, head_dim)  # [L, B, T, H, D]
        if offload == "none":
            self.resident_sinks, self.staging_frames, self.recent_frames = sink_frames, 0, ring_frames
        else:
            self.resident_sinks = sink_frames if offload == "history" else 0
            self.recent_frames = min(recent_frames, ring_frames) if offload == "history" else 0
            self.staging_frames = staging_frames
        self.synthesised_frames = synthesised_frames
        self._synthesised_base = self.resident_sinks + self.staging_frames + self.recent_frames  # their device slots
        device_slots = self._synthesised_base + synthesised_frames
        shape = (num_layers, batch, device_slots, tokens_per_frame, num_heads, head_dim)  # [L, B, S_dev, T, H, D]
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.prototype_sums = torch.zeros(batch, slots, head_dim, dtype=torch.float32, device=device)  # [B, S, D]
        cuda = self.device.type == "cuda"
        # A page-locked copy of the prototypes, refreshed as soon as layer 0 of a commit is written, for policies to
        # select from on the host without waiting for the device to finish the chunk (None on CPU: read directly).
        self._prototypes_host = torch.zeros_like(self.prototype_sums, device="cpu").pin_memory() if cuda else None
        self._prototypes_copied = torch.cuda.Event() if cuda else None
        self.slot_frame = [-1] * slots  # global frame held by each slot (-1 = empty), host-side bookkeeping
        self.num_frames = 0  # frames committed so far; the next chunk starts here
        self._host = HostSlots(slots, self._frame_shape, dtype, pin=cuda) if offload != "none" else None
        self._recent_frame = [-1] * self.recent_frames  # frame held by each recent-ring device slot
        self._staged: list[dict[int, int]] = [{} for _ in range(batch)]  # per sample: frame -> staging slot
        self._copy_stream = torch.cuda.Stream(self.device) if cuda and offload != "none" else None
        self._staged_copies = StagedCopies(self._copy_stream) if self._copy_stream is not None else None
        self._reader = MemoryReader()  # its workspace, reused from chunk to chunk
        self._memos: dict[int, dict[str, torch.Tensor]] = {}  # chunk start -> the memo its view left (newest two)
        self._folded_at = -1  # start of the last chunk whose folds were applied (-1: synthesised frames are empty)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def keys_rotated(self) -> bool:
        """Keys are stored rotated at their frames' own positions (see ``rotated_grid``)."""
        return self.rotated_grid is not None

    @property
    def num_layers(self) -> int:
        return self.k.shape[0]

    # ---- where frames live --------------------------------------------------------------------------------------

    def slot(self, frame: int) -> int:
        """The frame's slot in the canonical (sinks + ring) layout: on the device without offloading, else in host
        memory."""
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.ring_frames

    def holds(self, frame: int) -> bool:
        if frame < 0:  # a synthesised frame, once something was folded into it
            return -frame <= self.synthesised_frames and self._folded_at >= 0
        return frame < self.num_frames and self.slot_frame[self.slot(frame)] == frame

    def _recent_index(self, frame: int) -> int:
        """Position of ``frame`` (past the sinks) in the recent ring."""
        return (frame - self.sink_frames) % self.recent_frames

    def _recent_slot(self, frame: int) -> int:
        """Device slot of ``frame`` in the recent ring (whether or not it is there)."""
        return self.resident_sinks + self.staging_frames + self._recent_index(frame)

    def _device_slot(self, frame: int, sample: int) -> int | None:
        """The device slot holding ``frame`` for ``sample`` now (None: only in host memory)."""
        if frame < 0:
            return self._synthesised_base - 1 - frame
        if frame < self.sink_frames and self.resident_sinks:
            return frame
        if frame >= self.sink_frames and self.recent_frames and self._recent_frame[self._recent_index(frame)] == frame:
            return self._recent_slot(frame)
        return self._staged[sample].get(frame)

    def locate(self, frames: torch.Tensor) -> torch.Tensor:
        """Device slots ``[B, N]`` (CPU long) of ``frames`` ``[B, N]`` (CPU long), copying frames that are only
        in host memory into staging slots first (per sample: samples may attend different frames); raises if a
        frame is not held or staging is too small."""
        rows = [self._held(row) for row in frames]
        waited = False
        for sample, row in enumerate(rows):
            staged = self._staged[sample]
            fetch = [f for f in dict.fromkeys(row) if self._device_slot(f, sample) is None]
            if not fetch:
                continue
            in_use = {staged[f] for f in row if f in staged}
            base = self.resident_sinks
            free = [s for s in range(base, base + self.staging_frames) if s not in in_use]
            if len(fetch) > len(free):
                raise RuntimeError(f"a chunk attends {len(fetch) + len(in_use)} frames held only in host memory, the "
                                   f"store stages {self.staging_frames}: the policy's staging size is wrong")
            if self._copy_stream is not None and not waited:  # host copies of recent commits must have landed
                torch.cuda.current_stream(self.device).wait_stream(self._copy_stream)
                waited = True
            for frame, slot in zip(fetch, free, strict=False):
                self._staged[sample] = staged = {f: s for f, s in staged.items() if s != slot}
                self._fetch(frame, slot, sample)
                staged[frame] = slot
        slots = [self._lead(sample, row, [self._device_slot(f, sample) for f in row])
                 for sample, row in enumerate(rows)]
        return torch.tensor(slots, dtype=torch.long).reshape(frames.shape)

    def _lead(self, sample: int, row: list[int], slots: list[int]) -> list[int]:
        """``slots`` of ``sample``'s ``row``, after copying device frames into free staging slots where that makes the
        row read the store's first slots in order. A chunk whose memory has a gap where staged frames go (relax's
        warm-up: sinks and tail, no history yet) is then attended in place, not gathered into a workspace."""
        staging = range(self.resident_sinks, self.resident_sinks + self.staging_frames)
        moves = [(j, frame, slot) for j, (frame, slot) in enumerate(zip(row, slots, strict=True)) if slot != j]
        if not moves or any(j not in staging or j in slots for j, _, _ in moves):
            return slots
        for j, frame, slot in moves:  # a device-to-device copy per frame; the frame stays where it was as well
            self.k[:, sample, j].copy_(self.k[:, sample, slot])
            self.v[:, sample, j].copy_(self.v[:, sample, slot])
            self._staged[sample] = {f: s for f, s in self._staged[sample].items() if s != j} | {frame: j}
        return list(range(len(row)))

    def _held(self, frames: torch.Tensor) -> list[int]:
        """``frames`` as a flat list; raises if one is not held."""
        flat = frames.flatten().tolist()
        missing = sorted({f for f in flat if not self.holds(f)})
        if missing:
            raise RuntimeError(f"frames {missing[:8]} are not in the store (committed {self.num_frames}, "
                               f"sinks {self.sink_frames}, ring {self.ring_frames}): the policy's max_lag is wrong")
        return flat

    def _fetch(self, frame: int, device_slot: int, sample: int) -> None:
        """Copy ``sample``'s ``frame`` from host memory into a device slot (current stream, asynchronously)."""
        keys, values = self._host[self.slot(frame)]
        for layer in range(self.num_layers):
            self.k[layer, sample, device_slot].copy_(keys[layer, sample], non_blocking=True)
            self.v[layer, sample, device_slot].copy_(values[layer, sample], non_blocking=True)

    def gather(self, layer: int, slots: torch.Tensor, tokens: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values at device ``slots`` ``[B, N]`` (from :meth:`locate`) for one layer, as ``[B, N*T, H, D]``;
        with ``tokens`` ``[B, K]`` only token ``tokens[b, i]`` of slot ``slots[b, i]``, as ``[B, K, H, D]``."""
        rows = torch.arange(self.batch, device=slots.device)[:, None]
        if tokens is not None:
            return self.k[layer, rows, slots, tokens], self.v[layer, rows, slots, tokens]
        return self.k[layer, rows, slots].flatten(1, 2), self.v[layer, rows, slots].flatten(1, 2)

    def read(self, view: MemoryView, grid_hw: tuple[int, int], head_dim: int) -> MemoryKV | None:
        """The rotated keys/values a chunk attends to under ``view``, in the store's reused workspace (valid until
        the next read); None when the view attends no cached frame. Keeps the view's memo and applies its folds."""
        if view.memo is not None:
            self._memos[view.start] = {name: t.clone() for name, t in view.memo.items()}
            for stale in sorted(self._memos)[:-2]:
                del self._memos[stale]
        self._fold(view)
        return self._reader.read(self, view, grid_hw, head_dim)

    def _fold(self, view: MemoryView) -> None:
        """Fold stored frames into synthesised frames as ``view.folds`` say, :data:`FOLD_LAYERS` layers at a time
        (the rule sees them as a batch), unless this chunk's folds are already applied: a view read twice folds once."""
        if not view.folds or view.start <= self._folded_at:
            return
        rows = torch.arange(self.batch, device=self.device)[:, None]
        for fold in view.folds:
            if fold.slot >= self.synthesised_frames:
                raise ValueError(f"a fold into synthesised frame {fold.slot}; the store keeps "
                                 f"{self.synthesised_frames}")
            slots = upload(self.locate(fold.frames), self.device)  # [B, n]
            target = self._synthesised_base + fold.slot
            for first in range(0, self.num_layers, FOLD_LAYERS):  # layers folded together, as one batch
                layers = slice(first, min(first + FOLD_LAYERS, self.num_layers))
                as_batch = lambda t: t.flatten(0, 1)  # noqa: E731  [l, B, ...] -> [l*B, ...]
                k, v = fold.rule(as_batch(self.k[layers, :, target]), as_batch(self.v[layers, :, target]),
                                 as_batch(self.k[layers, rows, slots]), as_batch(self.v[layers, rows, slots]))
                self.k[layers, :, target] = k.unflatten(0, (-1, self.batch))  # [l, B, T, H, D]
                self.v[layers, :, target] = v.unflatten(0, (-1, self.batch))
        self._folded_at = view.start

    def memo(self, before: int) -> dict[str, torch.Tensor] | None:
        """The newest memo left by a chunk starting before ``before`` (see :attr:`MemoryView.memo`)."""
        earlier = [start for start in self._memos if start < before]
        return self._memos[max(earlier)] if earlier else None

    # ---- writing ------------------------------------------------------------------------------------------------

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one layer's keys/values ``[B, f*T, H, D]`` of frames ``start..start+f-1``: the next frames to commit
        (then :meth:`advance`) or frames already held (a rewrite, e.g. re-encoded under a new prompt)."""
        frames = keys.shape[1] // self.tokens_per_frame
        if layer == 0:
            self._check_write(start, frames)
            unrotated = keys.unflatten(1, (frames, self.tokens_per_frame))  # [B, f, T, H, D]
            for i, frame in enumerate(range(start, start + frames)):
                self.prototype_sums[:, self.slot(frame)] = unrotated[:, i].float().mean(dim=(1, 2))
            self._copy_prototypes()
        if self.rotated_grid is not None:
            keys = apply_rope(keys, self._rotation(start, frames))
        keys = keys.unflatten(1, (frames, self.tokens_per_frame))  # [B, f, T, H, D]
        values = values.unflatten(1, (frames, self.tokens_per_frame))
        for i, frame in enumerate(range(start, start + frames)):
            slot = self._device_slot(frame, 0)  # sinks, the newest frames, or none (bookkeeping set at layer 0)
            if slot is not None:
                self.k[layer, :, slot] = keys[:, i]
                self.v[layer, :, slot] = values[:, i]
        if self.offload != "none":
            self._write_host(layer, start, keys, values)

    def _rotation(self, start: int, frames: int) -> torch.Tensor:
        """RoPE factors ``[1, f*T, 2, D]`` of frames ``start..start+f-1`` at their own positions (one per write)."""
        if self._write_rope is None or self._write_rope[0] != start or self._write_rope[1].shape[1] != (
                frames * self.tokens_per_frame):
            positions = upload(torch.arange(start, start + frames), self.device)
            factors = rope_factors(positions, self.rotated_grid, self.k.shape[-1], rotation_dtype(self.k.dtype))
            self._write_rope = (start, factors[None])
        return self._write_rope[1]

    def _check_write(self, start: int, frames: int) -> None:
        """Before layer 0 of a write: the frames are the next ones or all held; update the bookkeeping."""
        span = range(start, start + frames)
        if start != self.num_frames and not all(self.holds(f) for f in span):
            raise ValueError(f"cannot write frames {span.start}..{span.stop - 1}: the store expects frame "
                             f"{self.num_frames} next, and rewrites only frames it holds")
        for frame in span:
            self.slot_frame[self.slot(frame)] = frame
            for staged in self._staged:
                staged.pop(frame, None)
            if frame >= self.sink_frames and self.recent_frames and frame >= start + frames - self.recent_frames:
                self._recent_frame[self._recent_index(frame)] = frame

    def _write_host(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Copy one layer of frames ``[B, f, T, H, D]`` to their host slots (on the copy stream when on CUDA)."""
        def to_host(keys: torch.Tensor, values: torch.Tensor) -> None:
            for i in range(keys.shape[1]):
                host_keys, host_values = self._host[self.slot(start + i)]
                for b in range(self.batch):
                    host_keys[layer, b].copy_(keys[b, i], non_blocking=True)
                    host_values[layer, b].copy_(values[b, i], non_blocking=True)

        if self._staged_copies is None:  # CPU: the copies are done when they return
            to_host(keys, values)
        else:
            self._staged_copies.copy(keys, values, to_host)

    def advance(self, end: int) -> None:
        """Mark frames up to ``end`` (exclusive) committed, after every layer of them was :meth:`write`-n."""
        self.num_frames = end

    def fast_forward(self, frames: int) -> None:
        """Relabel every held frame past the sinks as if ``frames`` more had been committed before it, for measuring
        a chunk deep into a stream without making the frames before it. ``frames`` must be a multiple of the ring
        size, so every frame keeps its slot and its keys/values (they stand for the relabelled frame; keys stored
        rotated keep their old positions' rotation: a tool for timing and memory, not for video)."""
        if frames < 0 or frames % self.ring_frames:
            raise ValueError(f"fast_forward({frames}): need a non-negative multiple of the ring size "
                             f"{self.ring_frames}")
        shift = lambda f: f + frames if f >= self.sink_frames else f  # noqa: E731
        self.slot_frame = [shift(f) for f in self.slot_frame]
        self._recent_frame = [shift(f) for f in self._recent_frame]
        self._staged = [{shift(f): s for f, s in staged.items()} for staged in self._staged]
        self._memos = {start + frames: {name: torch.where(t >= self.sink_frames, t + frames, t) if name == "frames"
                                        else t for name, t in memo.items()} for start, memo in self._memos.items()}
        if self._folded_at >= 0:  # the synthesised frames stand for the relabelled stream's
            self._folded_at += frames
        self.num_frames += frames

    def commit(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Write a chunk's per-layer keys/values ``[B, f*T, H, D]`` (frames ``start..start+f-1``)."""
        if start != self.num_frames:
            raise ValueError(f"chunk starts at frame {start} but the store expects frame {self.num_frames}")
        self._write_layers(start, keys, values)
        self.advance(start + keys[0].shape[1] // self.tokens_per_frame)

    def rewrite(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        """Overwrite frames ``start..`` already held with ``keys``/``values`` ``[B, f*T, H, D]`` per layer; what is
        committed does not change."""
        frames = range(start, start + keys[0].shape[1] // self.tokens_per_frame)
        if not all(self.holds(f) for f in frames):
            raise ValueError(f"cannot rewrite frames {frames.start}..{frames.stop - 1}: not all are held")
        self._write_layers(start, keys, values)

    def _write_layers(self, start: int, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
            self.write(layer, start, k, v)

    # ---- scoring --------------------------------------------------------------------------------------------------

    def _copy_prototypes(self) -> None:
        """Start the page-locked host copy of the prototypes (after a layer-0 write or a restore)."""
        if self._prototypes_host is not None:
            self._prototypes_host.copy_(self.prototype_sums, non_blocking=True)
            self._prototypes_copied.record()

    def prototypes(self, frames: torch.Tensor) -> torch.Tensor:
        """L2-normalised layer-0 key prototype of the union of ``frames`` ``[B, n]`` per sample -> ``[B, D]``, on the
        CPU. On CUDA it is read from the host copy started when the last commit's layer 0 was written, so a policy
        choosing the next chunk's frames waits for that layer, not for the whole chunk: the device keeps working
        through the commit's other layers while the host selects."""
        table = self.prototype_sums
        if self._prototypes_host is not None:
            self._prototypes_copied.synchronize()
            table = self._prototypes_host
        slots = torch.tensor([self.slot(f) for f in self._held(frames)], dtype=torch.long).reshape(frames.shape)
        rows = torch.arange(self.batch)[:, None]
        mean = table[rows, slots].mean(dim=1)  # equal token counts: mean of means = joint mean
        return torch.nn.functional.normalize(mean, dim=-1)

    def layer0_keys(self, frames: list[int], sample: int) -> torch.Tensor:
        """Layer-0 keys ``[n, T, H, D]`` of ``sample``'s held ``frames`` on the device, from host memory when
        offloaded (after the host copies have landed: the caller synchronises the copy stream)."""
        if self.offload == "none":
            return self.k[0, sample, [self.slot(f) for f in frames]]
        return torch.stack([upload(self._host[self.slot(f)][0][0, sample], self.device) for f in frames])

    def token_scores(self, frames: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
        """Participation of each layer-0 token of ``frames`` ``[B, n]`` in attention from ``probe`` ``[B, m]``'s
        tokens used as queries: ``sum_h (sum_probe k_h) . k_h / (sqrt(D) H)`` -> ``[B, n, T]`` float32 on the CPU."""
        self._held(frames)  # raise on frames the store no longer holds
        self._held(probe)
        if self._copy_stream is not None:
            self._copy_stream.synchronize()
        rows, wanted, probes = [], frames.tolist(), probe.tolist()
        for b in range(self.batch):
            keys = self.layer0_keys(wanted[b], b).float()  # [n, T, H, D]
            query = self.layer0_keys(probes[b], b).float().sum(dim=(0, 1))  # [H, D]
            heads, dim = query.shape
            rows.append(torch.einsum("nthd,hd->nt", keys, query) / (dim ** 0.5 * heads))
        return torch.stack(rows).cpu()

    # ---- snapshots and sizes --------------------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The frames in the canonical layout ``[L, B, S, T, H, D]`` whatever the offloading, for a snapshot (with
        :meth:`state_meta`); synthesised frames ``[L, B, n, T, H, D]`` apart."""
        extra = {f"memo.{start}.{name}": t for start, memo in self._memos.items() for name, t in memo.items()}
        if self.synthesised_frames:
            base = self._synthesised_base
            extra |= {"synthesised_k": self.k[:, :, base:], "synthesised_v": self.v[:, :, base:],
                      "folded_at": torch.tensor(self._folded_at)}
        if self.offload == "none":
            slots = len(self.slot_frame)
            return {"k": self.k[:, :, :slots], "v": self.v[:, :, :slots], "prototype_sums": self.prototype_sums,
                    **extra}
        if self._copy_stream is not None:
            self._copy_stream.synchronize()
        zeros = torch.zeros(self._frame_shape, dtype=self.k.dtype)
        held = [self._host[s] if frame >= 0 else (zeros, zeros) for s, frame in enumerate(self.slot_frame)]
        k = torch.stack([keys for keys, _ in held], dim=2)
        v = torch.stack([values for _, values in held], dim=2)
        return {"k": k, "v": v, "prototype_sums": self.prototype_sums, **extra}

    def state_meta(self) -> dict:
        return {"num_frames": self.num_frames, "slot_frame": list(self.slot_frame), "keys_rotated": self.keys_rotated}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a snapshot into this store, which must have been built with the same sizes (any offloading)."""
        slots = len(self.slot_frame)
        frames_shape = (*self._frame_shape[:2], slots, *self._frame_shape[2:])  # [L, B, S, T, H, D]
        expected = {"k": (frames_shape, self.k.dtype), "v": (frames_shape, self.k.dtype),
                    "prototype_sums": (tuple(self.prototype_sums.shape), self.prototype_sums.dtype)}
        if self.synthesised_frames:
            made = (*self._frame_shape[:2], self.synthesised_frames, *self._frame_shape[2:])  # [L, B, n, T, H, D]
            expected |= {"synthesised_k": (made, self.k.dtype), "synthesised_v": (made, self.k.dtype),
                         "folded_at": ((), torch.long)}
        for name, (shape, dtype) in expected.items():
            saved = tensors.get(name)
            if saved is None or tuple(saved.shape) != shape or saved.dtype != dtype:
                found = "nothing" if saved is None else f"{saved.dtype} {list(saved.shape)}"
                raise ValueError(f"the saved frame store's {name} is {found}, this run needs {dtype} {list(shape)} "
                                 "(another model, size or policy?)")
        if len(meta["slot_frame"]) != slots:
            raise ValueError(f"the saved frame store has {len(meta['slot_frame'])} slots, this one {slots}")
        if bool(meta.get("keys_rotated", False)) != self.keys_rotated:
            state = "rotated" if meta.get("keys_rotated") else "un-rotated"
            raise ValueError(f"the saved frame store keeps its keys {state}, this run's store does not (saved by "
                             "another version?); start the video again")
        self.prototype_sums.copy_(tensors["prototype_sums"])
        self._copy_prototypes()
        if self.synthesised_frames:
            self.k[:, :, self._synthesised_base:].copy_(tensors["synthesised_k"])
            self.v[:, :, self._synthesised_base:].copy_(tensors["synthesised_v"])
            self._folded_at = int(tensors["folded_at"])
        self._memos = {}
        for key, tensor in tensors.items():
            if key.startswith("memo."):
                _, start, name = key.split(".", 2)
                self._memos.setdefault(int(start), {})[name] = tensor.cpu().clone()
        self.slot_frame = [int(f) for f in meta["slot_frame"]]
        self.num_frames = int(meta["num_frames"])
        self._staged = [{} for _ in self._staged]
        held = sorted(f for f in self.slot_frame if f >= 0)
        recent = [f for f in held if f >= max(self.sink_frames, self.num_frames - self.recent_frames)]
        self._recent_frame = [-1] * self.recent_frames
        for frame in recent:
            self._recent_frame[self._recent_index(frame)] = frame
        if self.offload == "none":
            self.k[:, :, :slots].copy_(tensors["k"])
            self.v[:, :, :slots].copy_(tensors["v"])
            return
        for frame in held:
            slot = self.slot(frame)
            host_keys, host_values = self._host[slot]
            host_keys.copy_(tensors["k"][:, :, slot])
            host_values.copy_(tensors["v"][:, :, slot])
        for frame in [f for f in held if f < self.resident_sinks] + recent:  # the device tier
            device_slot = frame if frame < self.sink_frames else self._recent_slot(frame)
            for sample in range(self.batch):
                self._fetch(frame, device_slot, sample)

    def device_nbytes(self) -> int:
        """Bytes of keys/values (and prototypes, and the buffers host copies are staged in) on the device."""
        staging = self._staged_copies.nbytes() if self._staged_copies is not None else 0
        return self.k.nbytes + self.v.nbytes + self.prototype_sums.nbytes + staging

    def host_nbytes(self) -> int:
        """Bytes of keys/values in host memory (page-locked in the background from the start, to ``(sinks + ring)``
        frames)."""
        return 0 if self._host is None else self._host.nbytes()

    def workspace_nbytes(self) -> int:
        """Bytes of the reader's workspace: the rotated keys/values of the last chunk's attended frames."""
        return self._reader.nbytes()

    def nbytes(self) -> int:
        return self.device_nbytes() + self.host_nbytes()

