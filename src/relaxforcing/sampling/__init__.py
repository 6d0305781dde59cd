"""Sampling: the flow-matching schedule, the one-chunk step and the session that drives a stream chunk by chunk."""

from relaxforcing.sampling.sampler import Chunk, ChunkSampler, CrossKV
from relaxforcing.sampling.schedule import FlowSchedule
from relaxforcing.sampling.session import DEFAULT_RECACHE_FRAMES, StreamSession

__all__ = ["DEFAULT_RECACHE_FRAMES", "Chunk", "ChunkSampler", "CrossKV", "FlowSchedule", "StreamSession"]
