"""Heatbath + overrelaxation for U(1) links, checkerboard-vectorised over links and chains.

The terms of S containing one link theta_mu(x) are -beta Re[e^{i theta} s], s the staple sum
(the two plaquettes through the link with the link taken out), so its conditional law is von
Mises with kappa = beta |s| and mean -arg s (Creutz, Phys. Rev. D 21 (1980) 2308, for U(1)).
Links of one direction and one parity of the perpendicular coordinate share no plaquette, so
each of the four classes (mu, parity) is drawn at once. Overrelaxation reflects each link about
the staple's angle, theta -> -2 arg s - theta: it keeps S fixed (microcanonical, Adler 1981;
Creutz 1987) and moves far; heatbath sweeps make the chain ergodic. One step = one heatbath
sweep followed by ``n_overrelax`` overrelaxation sweeps. Needs even extents.
"""

from __future__ import annotations

from typing import Any

import torch

from lattgen import ConfigError, LatticeError, Sampler, wrap_angle

from .action import U1Action, shift
from .von_mises import sample_von_mises


def staples(theta: torch.Tensor, mu: int) -> torch.Tensor:
    """s_mu(x), complex128 (batch, L1, L2): S's dependence on theta_mu(x) is -beta Re[e^{i theta_mu(x)} s_mu(x)].

    mu = 0: P(x) = theta_1(x) + a, a = theta_2(x+e1) - theta_2(x) - theta_1(x+e2); P(x-e2) = -theta_1(x) + b.
    mu = 1: P(x) = -theta_2(x) + c; P(x-e1) = theta_2(x) + d. s = e^{i a} + e^{-i b} (and so on).
    """
    t1, t2 = theta[:, 0], theta[:, 1]
    if mu == 0:
        a = shift(t2, 0) - t2 - shift(t1, 1)
        tm = shift(t1, 1, -1)  # links at x - e2
        b = tm + shift(shift(t2, 0), 1, -1) - shift(t2, 1, -1)
        ang_plus, ang_minus = a, b
    else:
        c = t1 + shift(t2, 0) - shift(t1, 1)  # P(x) = c - theta_2(x)
        d = shift(t1, 0, -1) - shift(t2, 0, -1) - shift(shift(t1, 0, -1), 1)  # P(x-e1) = theta_2(x) + d
        ang_plus, ang_minus = d, c
    return torch.polar(torch.ones_like(ang_plus), ang_plus) + torch.polar(torch.ones_like(ang_minus), -ang_minus)


class U1Heatbath(Sampler):
    """Checkerboard heatbath + overrelaxation for the ``u1`` action; every step is exact."""

    exact = True

    def __init__(self, action: U1Action, *, n_chains: int = 64, n_overrelax: int = 1, init: str = "random",
                 device="cpu", generator=None, dtype=torch.float64, model=None):
        if not isinstance(action, U1Action):
            raise ConfigError(f"sampler u1_heatbath needs the u1 action, got {type(action).__name__}")
        if any(n % 2 for n in action.lattice.shape):
            raise LatticeError(f"sampler u1_heatbath updates links in checkerboard classes and needs even "
                               f"extents; got lattice {list(action.lattice.shape)}")
        if n_overrelax < 0:
            raise ConfigError(f"sampler.n_overrelax: must be >= 0, got {n_overrelax}")
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        self.beta = action.beta
        self.n_overrelax = int(n_overrelax)
        self.init = init
        space = action.field_space
        if init == "random":
            self.state = space.random(self.n_chains, generator=generator, device=self.device, dtype=dtype)
        elif init != "cold":
            raise ConfigError(f"sampler.init: {init!r} is not valid; choose one of: random, cold")
        lat = action.lattice
        coords = lat.coordinates(self.device)  # (L1, L2, 2)
        #: parity masks per direction: links theta_mu(x) with x_{nu} % 2 == p, nu the other axis
        self._masks = [[(coords[..., 1 - mu] % 2 == p) for p in (0, 1)] for mu in (0, 1)]

    def _update(self, theta: torch.Tensor, heat: bool) -> torch.Tensor:
        theta = theta.clone()
        for mu in (0, 1):
            for p in (0, 1):
                mask = self._masks[mu][p]
                s = staples(theta.to(torch.float64), mu)[:, mask]  # this class's links only
                mean = -torch.angle(s)
                if heat:
                    new = sample_von_mises(mean, self.beta * s.abs(), self.generator)
                else:
                    new = wrap_angle(2.0 * mean - theta[:, mu][:, mask].to(torch.float64))
                links = theta[:, mu]
                links[:, mask] = new.to(theta.dtype)
        return theta

    @torch.no_grad()
    def step(self, tune: bool = False) -> torch.Tensor:
        theta = self._update(self.state, heat=True)
        for _ in range(self.n_overrelax):
            theta = self._update(theta, heat=False)
        self.state = theta
        return torch.ones(self.n_chains, dtype=torch.float64, device=self.device)

    def info(self) -> dict[str, Any]:
        return {"sampler": "u1_heatbath", "n_chains": self.n_chains, "n_overrelax": self.n_overrelax,
                "init": self.init}
