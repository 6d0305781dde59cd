"""Shared fixtures: tiny models and helpers (CPU, float32)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import torch

from relaxforcing.model.config import WanConfig
from relaxforcing.model.wan import CausalWanModel


@pytest.fixture
def tiny_model() -> CausalWanModel:
    torch.manual_seed(0)
    model = CausalWanModel(WanConfig.from_name("tiny")).eval()
    with torch.no_grad():  # lift every parameter off its init so no path is trivially zero or identity
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture
def tiny_context() -> torch.Tensor:
    return torch.randn(2, 5, WanConfig.from_name("tiny").text_dim, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def nan_from_chunk():
    """``nan_from_chunk(pipe, k)`` makes the toy DiT's outputs NaN from chunk ``k`` on (each chunk calls it once per
    denoising step, a guided step included, and once for the clean pass)."""

    def poison(pipe, chunk: int) -> None:
        forward, calls = pipe.model.forward_chunk, {"n": 0}
        per_chunk = len(pipe.schedule.steps) + 1

        def failing(*args, **kwargs):
            calls["n"] += 1
            out = forward(*args, **kwargs)
            return out * float("nan") if calls["n"] > chunk * per_chunk else out

        pipe.model.forward_chunk = failing

    return poison


class NetworkBlocked(OSError):
    """Raised when code under test tries to reach a non-loopback address."""


_real_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if sock.family == socket.AF_UNIX or host in ("localhost", ""):
        return _real_connect(sock, address)
    try:
        if ipaddress.ip_address(host).is_loopback:
            return _real_connect(sock, address)
    except ValueError:
        pass
    raise NetworkBlocked(f"network access to {address!r} is blocked during tests")


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """The whole suite runs with outbound sockets blocked (loopback stays open for the viewer's server)."""
    socket.socket.connect = _loopback_only
    yield
    socket.socket.connect = _real_connect
