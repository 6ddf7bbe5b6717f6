"""The reference's learning-rate factor: linear warm-up, then linear decay over one cycle.

Shape of the LambdaLR multiplier used by the reference (``warm_up_steps`` 200, ``f_max`` 0.99,
``f_min`` 0.4, cycle 1M or 5M; the LDM "LambdaLinearScheduler" form):

    n <  warm-up: f = f_start + (f_max - f_start) * n / warm-up
    n >= warm-up: f = f_min + (f_max - f_min) * (cycle - n) / cycle, floored at f_min
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearWarmupDecay:
    """Callable lr factor for ``torch.optim.lr_scheduler.LambdaLR`` (picklable, so state_dict works)."""

    warmup_steps: int
    f_start: float
    f_max: float
    f_min: float
    cycle_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.f_start + (self.f_max - self.f_start) * step / self.warmup_steps
        remaining = max(self.cycle_steps - step, 0) / self.cycle_steps
        return max(self.f_min, self.f_min + (self.f_max - self.f_min) * remaining)


def make_scheduler(optimizer: torch.optim.Optimizer, factor: LinearWarmupDecay) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
