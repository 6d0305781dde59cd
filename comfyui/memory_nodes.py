"""One memory node per shipped policy, made from the policy registry: its parameters become widgets with the
engine's defaults, and the node outputs the policy's spec string, as ``--memory`` takes it (``relax:sink=2,...``)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import MISSING, Field, fields

from relaxforcing.memory.policies import POLICIES, MemoryPolicy

from . import sockets

TITLES = {
    "dense": "Self-Forcing dense window",
    "sink": "attention sink",
    "longlive": "LongLive",
    "infinity": "infinity-RoPE",
    "relax": "Relax Forcing",
    "deep": "Deep Forcing",
    "rollingsink": "Rolling Sink",
    "memrope": "MemRoPE",
}
"""Display names of the shipped policies (a policy added later is listed by its registry name)."""

TOOLTIPS = {
    "window": "Latent frames before the chunk that it attends to.",
    "sink": "First latent frames kept forever (attention sinks).",
    "tail": "Most recent latent frames kept before the chunk.",
    "recent": "Most recent latent frames attended, the current chunk included.",
    "relative_rope": "RoPE positions relative to the window instead of absolute.",
    "horizon": "RoPE position span the flushed cache is laid out in.",
    "hist": "History frames picked by the relaxation score r(h) = cos(h, sink) - lambda * cos(h, tail).",
    "candidates": "History candidates scored per chunk.",
    "lambda": "Redundancy weight lambda of the relaxation score.",
    "reservoir": "Frames of the virtual cache the candidates are spread over.",
    "contiguous_rope": "Contiguous RoPE positions instead of Hybrid RoPE.",
    "budget": "Latent frames' worth of tokens the cache is compressed to (Deep Forcing).",
    "reuse": "Compressions a kept token survives before it is evicted (Deep Forcing).",
    "compress": "Participative Compression on (off: Deep Sink only).",
    "alpha_long": "Rate of the long EMA slot that evicted frames are folded into (MemRoPE).",
    "alpha_short": "Rate of the short EMA slot that evicted frames are folded into (MemRoPE).",
    "adaptive": "Per-token adaptive rate for the short EMA slot (MemRoPE's variant).",
}
INT_RANGE = {"min": 0, "max": 100_000}
FLOAT_RANGE = {"min": -1000.0, "max": 1000.0, "step": 0.01, "round": 0.0001}
"""``round`` keeps defaults finer than the step (MemRoPE's alpha_long = 0.01 would otherwise be rounded away)."""


def policy_parameters(policy: type[MemoryPolicy]) -> dict[str, Field]:
    """Widget name -> dataclass field of the user-facing parameters (the command line's spelling, e.g. ``lambda``)."""
    spelling = {field: alias for alias, field in policy.aliases.items()}
    return {spelling.get(f.name, f.name): f for f in fields(policy) if f.name != "chunk_frames"}


def widget(name: str, field: Field) -> tuple[str, dict]:
    """ComfyUI's input spec for one policy parameter, its default the policy's."""
    options: dict = {"default": field.default} if field.default is not MISSING else {}
    if name in TOOLTIPS:
        options["tooltip"] = TOOLTIPS[name]
    kind = str(field.type)
    if kind == "bool":
        return "BOOLEAN", options
    if kind == "int":
        return "INT", {**options, **INT_RANGE}
    if kind == "float":
        return "FLOAT", {**options, **FLOAT_RANGE}
    raise TypeError(f"memory policy parameter {name}: type {kind} has no ComfyUI widget")


def configured(policy: type[MemoryPolicy], parameters: dict[str, Field], values: dict) -> MemoryPolicy:
    """``policy`` with the widgets' values (its own checks run; the model's chunk size is applied later)."""
    return policy(**{field.name: values[name] for name, field in parameters.items()})


def memory_node(policy: type[MemoryPolicy]) -> type:
    """The node class for ``policy``: widgets from its fields, output its spec, validated by the engine on queueing."""
    parameters = policy_parameters(policy)
    summary = (inspect.getdoc(sys.modules[policy.__module__]) or policy.name).split("\n\n")[0]

    class MemoryNode:
        DESCRIPTION = f"{summary}\n\nOutputs the memory spec `{policy.name}:key=value,...` for the Long Video node."
        CATEGORY = sockets.CATEGORY
        RETURN_TYPES = (sockets.MEMORY,)
        RETURN_NAMES = ("memory",)
        OUTPUT_TOOLTIPS = ("Memory policy spec; connect it to the Long Video node's memory input.",)
        FUNCTION = "spec"

        @classmethod
        def INPUT_TYPES(cls) -> dict:
            return {"required": {name: widget(name, field) for name, field in parameters.items()}}

        @classmethod
        def VALIDATE_INPUTS(cls, **values: object) -> bool | str:
            """The engine's own checks (e.g. ``hist <= candidates``), answered as ``node_errors`` on queueing."""
            if any(values.get(name) is None for name in parameters):  # a widget turned into a link: checked later
                return True
            try:
                configured(policy, parameters, values)
            except ValueError as error:
                return str(error)
            return True

        def spec(self, **values: object) -> tuple[str]:
            return (configured(policy, parameters, values).spec(),)

    MemoryNode.__name__ = MemoryNode.__qualname__ = node_name(policy.name)
    return MemoryNode


def node_name(policy: str) -> str:
    """``relax`` -> ``RelaxForcingMemoryRelax`` (the node's class_type in workflows)."""
    return "RelaxForcingMemory" + policy.title().replace("_", "")


MEMORY_NODES: dict[str, type] = {node_name(name): memory_node(policy) for name, policy in POLICIES.items()}
MEMORY_DISPLAY_NAMES: dict[str, str] = {
    node_name(name): f"Memory: {TITLES.get(name, name)} ({name})" for name in POLICIES
}
