"""Shared fixtures: tiny models and helpers (CPU, float32)."""

from __future__ import annotations

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
