"""Deep Forcing (arXiv 2512.05081): Deep Sink + Participative Compression, training-free.

Rule (the authors' release, ``wan/modules/causal_model.py`` (DS+PC) and ``causal_model_DS.py`` (DS only),
``inference.py``: ``--Budget 16 --Recent 4``, config ``self_forcing_dmd_sink10.yaml``; read at Nizben/Spectral_C
@ea9961a "code release" by the first author, as cvlab-kaist/DeepForcing holds only the project page):

* A ``window``-frame cache (21) whose first ``sink`` frames (10 with compression, 14 for DS only) are pinned.
* Deep Sink positions: keys are cached roped at absolute positions; whenever the cache overflows the sink keys are
  rotated so the sink ends where the rest of the cache begins, counting the current chunk in "the rest": DS only,
  sinks at ``t-window .. t-window+sink-1`` (3 positions stay empty before the 4 previous frames, which keep their
  absolute positions t-4..t-1); with compression, sinks at ``t-budget ..`` at every compression chunk (the first
  rotation is ``window - budget`` from the true positions) and unchanged in between.
* Participative Compression: when ``cache + chunk > window`` (first at t0 = 21, then every
  ``((window-budget)//f + 1)`` chunks = 6 frames), the cache plus the new chunk is cut to ``budget`` frames' worth of
  tokens: sinks, the ``recent`` newest frames (the previous frame and the chunk), and the top ``budget-sink-recent``
  frames' worth of tokens (2 x T) of the rest by ``sum over recent query tokens of q.k / (sqrt(D) H)``, heads
  flattened ("sum" fusion). A token may be picked ``reuse`` (7) times, then it is evicted. Kept tokens stay at
  their absolute positions (the "Top-C RoPE compensation" branch never runs: its span is empty). In between
  compressions the chunks attend sinks | kept tokens | the frames since (all tokens) | current.

Ours differs where the engine's policies see only layer-0 keys: scores use the layer-0 *keys* of the ``recent``
frames before the chunk as queries (the authors: each layer's roped queries of the current noisy chunk plus the
last clean frame), computed once per chunk and shared by all layers; keys are rotated from un-roped copies (the
authors rotate roped bf16 keys in place). The selection (kept tokens and their counts) is the view's memo. The view
lists every frame a kept token can come from (``max_lag`` back: a token lives at most ``reuse`` compressions) and
names the kept tokens with ``keep_tokens``; max_lag = 50 by default. Every sample keeps as many tokens, so the reader
gathers only those (``MemoryReader``): attention runs over the budget's tokens, not over the listed frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.view import MemoryView


@dataclass(frozen=True)
class DeepPolicy(MemoryPolicy):
    name = "deep"
    sink: int = 10
    window: int = 21
    budget: int = 16
    recent: int = 4
    reuse: int = 7
    compress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        f = self.chunk_frames
        if self.sink < 1 or self.window < self.sink + f + 1:
            raise ValueError(f"deep: need sink >= 1 and window >= sink + chunk + 1 (got sink={self.sink}, "
                             f"window={self.window})")
        if self.compress and not (f <= self.recent and self.sink + self.recent <= self.budget <= self.window
                                  and self.reuse >= 1 and self.budget - self.sink - self.recent <= self.period):
            raise ValueError(f"deep: need chunk {f} <= recent, sink + recent <= budget <= window, reuse >= 1 and "
                             f"budget - sink - recent <= {self.period} (the frames between compressions) "
                             f"(got sink={self.sink}, recent={self.recent}, budget={self.budget}, "
                             f"window={self.window}, reuse={self.reuse})")

    # ---- schedule -------------------------------------------------------------------------------------------

    @property
    def first_roll(self) -> int:
        """Start of the first chunk that overflows the cache."""
        f = self.chunk_frames
        return f * math.ceil((self.window - f + 1) / f)

    @property
    def period(self) -> int:
        """Frames between compressions: the chunks that fit after one, plus the compressing chunk."""
        return ((self.window - self.budget) // self.chunk_frames + 1) * self.chunk_frames

    def last_compression(self, start: int) -> int:
        return start - (start - self.first_roll) % self.period

    def new_candidates(self, compression: int) -> range:
        """Frames that enter the candidate region at a compression: those that left the recent window since."""
        behind = self.recent - self.chunk_frames  # previous frames inside the recent window
        first = self.sink if compression == self.first_roll else compression - self.period - behind
        return range(first, compression - behind)

    @property
    def sink_frames(self) -> int:
        return self.sink

    @property
    def max_lag(self) -> int:
        f = self.chunk_frames
        if not self.compress:
            return self.window - self.sink - f
        behind = self.recent - f
        last_kept = self.reuse * self.period - f  # chunks after its first pick that still attend a token
        first = self.first_roll + last_kept - self.sink
        steady = last_kept + self.period + behind
        return max(first, steady, self.period - f + behind)

    # ---- selection ------------------------------------------------------------------------------------------

    def select(self, store: StoreView, start: int) -> MemoryView:
        f, batch = self.chunk_frames, store.batch
        if start < self.first_roll:  # the cache still holds every frame at its true position
            frames = list(range(start))
            roles = ["sink" if i < self.sink else "window" for i in frames]
            return MemoryView.shared(start, batch, frames, frames, roles, self.queries(start))
        sinks = list(range(self.sink))
        if not self.compress:
            previous = list(range(start - self.max_lag, start))
            positions = [start - self.window + i for i in sinks] + previous
            return MemoryView.shared(start, batch, sinks + previous, positions,
                                     ["sink"] * self.sink + ["tail"] * len(previous), self.queries(start))
        compression = self.last_compression(start)
        tail = list(range(compression - (self.recent - f), start))
        older = list(range(max(self.sink, start - self.max_lag), compression - (self.recent - f)))
        frames = sinks + older + tail
        offset = compression - self.budget + (self.window - self.first_roll)
        positions = [offset + i for i in sinks] + older + tail
        roles = ["sink"] * self.sink + ["history"] * len(older) + ["tail"] * len(tail)
        memo = self.compressed(store, compression) if start == compression else store.memo(start)
        keep = torch.ones(batch, len(frames), store.tokens_per_frame, dtype=torch.bool)  # [B, N, T]
        keep[:, self.sink:self.sink + len(older)] = False
        if memo is not None:
            column = {frame: i for i, frame in enumerate(frames)}
            for b in range(batch):
                columns = torch.tensor([column[f] for f in memo["frames"][b].tolist()], dtype=torch.long)
                keep[b, columns, memo["tokens"][b]] = True
        rows = lambda values: torch.tensor(values, dtype=torch.long).repeat(batch, 1)  # noqa: E731
        return MemoryView(start=start, frames=rows(frames), positions=rows(positions), roles=tuple(roles),
                          query_positions=torch.tensor(list(self.queries(start))), keep_tokens=keep,
                          memo=memo if start == compression else None)

    def compressed(self, store: StoreView, compression: int) -> dict[str, torch.Tensor]:
        """The compression at ``compression``: kept ``(frame, token)`` pairs per sample and their pick counts."""
        batch = store.batch
        previous = store.memo(compression) if compression > self.first_roll else None
        new = list(self.new_candidates(compression))
        probe = torch.arange(compression - self.recent, compression).repeat(batch, 1)
        fresh = store.token_scores(torch.tensor(new).repeat(batch, 1), probe)  # [B, n, T]
        tokens = fresh.shape[-1]
        picked_frames, picked_tokens, picked_counts = [], [], []
        top = (self.budget - self.sink - self.recent) * tokens
        for b in range(batch):
            frame_ids = torch.tensor(new).repeat_interleave(tokens)
            token_ids = torch.arange(tokens).repeat(len(new))
            counts = torch.zeros(len(new) * tokens, dtype=torch.long)
            scores = fresh[b].flatten()
            if previous is not None:  # survivors first (cache order), then the new frames' tokens
                alive = previous["counts"][b] < self.reuse
                survivors = (previous["frames"][b][alive], previous["tokens"][b][alive], previous["counts"][b][alive])
                survivor_scores = self.scores_of(store, b, survivors[0], survivors[1], probe)
                frame_ids = torch.cat([survivors[0], frame_ids])
                token_ids = torch.cat([survivors[1], token_ids])
                counts = torch.cat([survivors[2], counts])
                scores = torch.cat([survivor_scores, scores])
            chosen = scores.topk(min(top, scores.numel())).indices
            order = chosen[torch.argsort(frame_ids[chosen] * tokens + token_ids[chosen])]  # cache order
            picked_frames.append(frame_ids[order])
            picked_tokens.append(token_ids[order])
            picked_counts.append(counts[order] + 1)
        return {"frames": torch.stack(picked_frames), "tokens": torch.stack(picked_tokens),
                "counts": torch.stack(picked_counts)}

    @staticmethod
    def scores_of(store: StoreView, sample: int, frames: torch.Tensor, tokens: torch.Tensor,
                  probe: torch.Tensor) -> torch.Tensor:
        """Scores of sample ``sample``'s tokens ``(frames[i], tokens[i])``."""
        unique = torch.unique(frames)
        if unique.numel() == 0:
            return torch.zeros(0)
        rows = unique.repeat(store.batch, 1)
        table = store.token_scores(rows, probe)[sample]  # [u, T]
        return table[torch.searchsorted(unique, frames), tokens]
