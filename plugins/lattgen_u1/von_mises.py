"""Vectorised von Mises sampling p(theta) ~ exp(kappa cos(theta - mu)) with the run's generator.

Best & Fisher's wrapped-Cauchy envelope rejection (Appl. Statist. 28 (1979) 152; acceptance
>= 0.65 at every kappa): rounds of proposals for every element at once, each round's accepted
draws kept, the host checked once per ``rounds_per_check`` rounds (not once per round).
"""

from __future__ import annotations

import math

import torch

from lattgen import wrap_angle

#: kappa below this is drawn as kappa = KAPPA_MIN (|error| in the density ~ 1e-12)
KAPPA_MIN = 1e-12


def sample_von_mises(mu: torch.Tensor, kappa: torch.Tensor, generator: torch.Generator | None,
                     rounds_per_check: int = 4) -> torch.Tensor:
    """One draw per element of von Mises(mu, kappa), wrapped into (-pi, pi], float64, shape of mu."""
    kappa = kappa.to(torch.float64).clamp(min=KAPPA_MIN)
    a = 1.0 + torch.sqrt(1.0 + 4.0 * kappa * kappa)
    b = 2.0 * kappa / (a + torch.sqrt(2.0 * a))  # = (a - sqrt(2a)) / (2 kappa), without cancellation
    r = (1.0 + b * b) / (2.0 * b)
    out = torch.zeros_like(kappa)
    todo = torch.ones_like(kappa, dtype=torch.bool)
    while True:
        for _ in range(rounds_per_check):
            u = torch.rand((3, *kappa.shape), generator=generator, device=kappa.device, dtype=torch.float64)
            z = torch.cos(math.pi * u[0])
            f = (1.0 + r * z) / (r + z)
            c = kappa * (r - f)
            u2 = u[1].clamp(min=1e-300)
            ok = (c * (2.0 - c) - u2 > 0) | (torch.log(c / u2) + 1.0 - c >= 0)
            new = ok & todo
            sign = torch.where(u[2] < 0.5, -1.0, 1.0)
            out = torch.where(new, sign * torch.acos(f.clamp(-1.0, 1.0)), out)
            todo = todo & ~ok
        if not bool(todo.any()):
            break
    return wrap_angle(out + mu.to(torch.float64))
