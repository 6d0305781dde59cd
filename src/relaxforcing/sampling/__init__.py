"""Sampling: the flow-matching schedule and the streaming chunk loop."""

from relaxforcing.sampling.schedule import FlowSchedule
from relaxforcing.sampling.stream import Chunk, StreamSampler, StreamState

__all__ = ["Chunk", "FlowSchedule", "StreamSampler", "StreamState"]
