"""Flow-matching few-step schedule of Self-Forcing: shifted sigmas, warped denoising steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FlowSchedule:
    """Self-Forcing's sampler constants (``denoising_step_list``, ``warp_denoising_step``, ``timestep_shift``)."""

    steps: tuple[int, ...] = (1000, 750, 500, 250)
    """Denoising steps on the 0..1000 grid, before warping."""
    warp: bool = True
    """Map each step through the shifted timestep table (Self-Forcing's `warp_denoising_step`)."""
    shift: float = 5.0
    """Timestep shift: sigma' = shift*sigma / (1 + (shift-1)*sigma)."""
    num_train_timesteps: int = 1000
    fresh_noise: bool = True
    """Re-noise each x0 estimate with fresh Gaussian noise (Self-Forcing, for distilled few-step models); when
    False, re-noise with the noise the model implies, x_t + (1 - sigma) v — a deterministic Euler step of the
    flow ODE, which plain (undistilled) flow-matching models such as the toy need."""
    guidance: float = 1.0
    """Classifier-free guidance scale: each denoising step also predicts the flow under the empty (all-zero) text
    context and uses ``uncond + guidance * (cond - uncond)``; 1 is off (one forward per step). For models trained
    with zeroed-caption dropout (the toy); distilled few-step models such as Self-Forcing run without it."""

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= self.num_train_timesteps for s in self.steps):
            raise ValueError(f"steps {self.steps} must be in (0, {self.num_train_timesteps}]")
        if not self.guidance >= 1:
            raise ValueError(f"guidance {self.guidance} must be >= 1 (1 is off)")

    def table(self) -> torch.Tensor:
        """The scheduler's timesteps, float64, descending: 1000*sigma' for sigma = 1 - k/1000."""
        n = self.num_train_timesteps
        sigma = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1]
        shifted = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        return shifted * n

    def timesteps(self) -> list[float]:
        """The timesteps the model sees, e.g. [1000.0, 937.5, 833.33, 625.0] for the defaults."""
        if not self.warp:
            return [float(s) for s in self.steps]
        table = torch.cat([self.table(), torch.zeros(1, dtype=torch.float64)])
        return [float(table[self.num_train_timesteps - s]) for s in self.steps]

    def sigma(self, timestep: float) -> float:
        """Sigma of the nearest scheduler timestep (the reference's argmin lookup); 0 for t = 0."""
        if timestep == 0:
            return 0.0
        table = self.table()
        index = int(torch.argmin((table - timestep).abs()))
        return float(table[index] / self.num_train_timesteps)
