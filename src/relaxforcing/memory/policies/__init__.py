"""Memory policies by name, built from ``name:key=value,...`` specs."""

from __future__ import annotations

import math
from dataclasses import fields

from relaxforcing.memory.policies.base import MemoryPolicy, StoreView
from relaxforcing.memory.policies.deep import DeepPolicy
from relaxforcing.memory.policies.dense import DensePolicy
from relaxforcing.memory.policies.infinity import InfinityPolicy
from relaxforcing.memory.policies.longlive import LongLivePolicy
from relaxforcing.memory.policies.memrope import MemRoPEPolicy
from relaxforcing.memory.policies.relax import RelaxPolicy
from relaxforcing.memory.policies.rollingsink import RollingSinkPolicy
from relaxforcing.memory.policies.sink import SinkPolicy

POLICIES: dict[str, type[MemoryPolicy]] = {
    cls.name: cls for cls in (DensePolicy, SinkPolicy, LongLivePolicy, InfinityPolicy, RelaxPolicy, DeepPolicy,
                              MemRoPEPolicy, RollingSinkPolicy)
}

__all__ = ["POLICIES", "MemoryPolicy", "StoreView", "build_policy", "parse_memory_spec", "DensePolicy", "SinkPolicy",
           "LongLivePolicy", "InfinityPolicy", "RelaxPolicy", "DeepPolicy", "MemRoPEPolicy",
           "RollingSinkPolicy"]


def _convert(policy: str, key: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        value = kind(raw)
        if kind is float and not math.isfinite(value):
            raise ValueError
        return value
    except ValueError:
        finite = " finite" if kind is float else ""
        raise ValueError(f"{policy}: {key}={raw!r} is not a valid{finite} {kind.__name__}") from None


def parse_memory_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"relax:sink=2,lambda=2.0"`` into ``("relax", {"sink": "2", "lambda": "2.0"})``."""
    name, _, params = spec.strip().partition(":")
    overrides: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"memory spec {spec!r}: expected key=value, got {item!r}")
        if key.strip() in overrides:
            raise ValueError(f"memory spec {spec!r}: {key.strip()!r} is given twice")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def build_policy(spec: str, chunk_frames: int = 3) -> MemoryPolicy:
    """Build a policy from ``name[:key=value,...]``; unknown names or parameters raise ValueError."""
    name, overrides = parse_memory_spec(spec)
    if name not in POLICIES:
        raise ValueError(f"unknown memory policy {name!r}; choose one of {', '.join(POLICIES)}")
    cls = POLICIES[name]
    types = {f.name: f.type for f in fields(cls) if f.name != "chunk_frames"}
    kinds = {"int": int, "float": float, "bool": bool}
    kwargs: dict[str, object] = {}
    for key, raw in overrides.items():
        field = cls.aliases.get(key, key)
        if field not in types:
            known = ", ".join([*types, *cls.aliases])
            raise ValueError(f"{name}: unknown parameter {key!r}; known parameters: {known}")
        if field in kwargs:
            raise ValueError(f"{name}: {key!r} sets {field!r}, which is already given")
        kwargs[field] = _convert(name, key, raw, kinds[str(types[field])])
    return cls(chunk_frames=chunk_frames, **kwargs)
