"""Vectorised von Mises sampling p(theta) ~ exp(kappa cos(theta - mu)) with the run's generator.

Best & Fisher's wrapped-Cauchy envelope rejection (Appl. Statist. 28 (1979) 152; acceptance
>= 0.65 at every kappa): ``rounds`` proposals for every element at once without looking at the
host, then the few elements still rejected (about 0.35^rounds of them) are redrawn alone until
none is left (one host check per extra round). Each element's draw is its first accepted
proposal, so the result is exact.
"""

from __future__ import annotations

import math

import torch

from lattgen import wrap_angle

#: kappa below this is drawn as kappa = KAPPA_MIN (|error| in the density ~ 1e-12)
KAPPA_MIN = 1e-12


def _propose(kappa: torch.Tensor, r: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One Best-Fisher proposal per element: (angle relative to the mean, accepted?)."""
    u = torch.rand((3, *kappa.shape), generator=generator, device=kappa.device, dtype=torch.float64)
    z = torch.cos(math.pi * u[0])
    f = (1.0 + r * z) / (r + z)
    c = kappa * (r - f)
    u2 = u[1].clamp(min=1e-300)
    ok = (c * (2.0 - c) - u2 > 0) | (torch.log(c / u2) + 1.0 - c >= 0)
    angle = torch.where(u[2] < 0.5, -1.0, 1.0) * torch.acos(f.clamp(-1.0, 1.0))
    return angle, ok


def sample_von_mises(mu: torch.Tensor, kappa: torch.Tensor, generator: torch.Generator | None,
                     rounds: int = 2) -> torch.Tensor:
    """One draw per element of von Mises(mu, kappa), wrapped into (-pi, pi], float64, shape of mu."""
    shape = mu.shape
    kappa = kappa.to(torch.float64).clamp(min=KAPPA_MIN).reshape(-1)
    a = 1.0 + torch.sqrt(1.0 + 4.0 * kappa * kappa)
    b = 2.0 * kappa / (a + torch.sqrt(2.0 * a))  # = (a - sqrt(2a)) / (2 kappa), without cancellation
    r = (1.0 + b * b) / (2.0 * b)
    out = torch.zeros_like(kappa)
    todo = torch.ones_like(kappa, dtype=torch.bool)
    for _ in range(rounds):  # every element, no host sync
        angle, ok = _propose(kappa, r, generator)
        out = torch.where(ok & todo, angle, out)
        todo = todo & ~ok
    left = todo.nonzero().squeeze(-1)
    while left.numel():  # the rest alone
        angle, ok = _propose(kappa[left], r[left], generator)
        out[left[ok]] = angle[ok]
        left = left[~ok]
    return wrap_angle(out.reshape(shape) + mu.to(torch.float64))
