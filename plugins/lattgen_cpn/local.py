"""Local checkerboard updates of CP^{N-1}: Metropolis with small rotations plus an exact phase heatbath.

The terms of S that contain z_x are -z_x^dagger A_x z_x with A_x = beta N sum_{+-mu} P_{x+-mu}
(``CPNAction.local_field``); sites of one checkerboard colour share no term, so all of them are
updated at once (one colour per half-sweep).

* Metropolis: z_x' = (z_x + w xi)/|z_x + w xi|, xi complex Gaussian. The proposal density depends
  only on Re(z^dagger z'), so it is symmetric; accepted with min(1, exp(-dS_x)) in float64.
* Phase heatbath ("overrelaxation"): in the eigenbasis of A_x, z_x = sum_k c_k v_k and the weight
  exp(sum_k lambda_k |c_k|^2) and the uniform measure on the sphere do not depend on the phases of
  c_k, so drawing every phase uniformly is an exact Gibbs step of those coordinates. It moves z_x
  far at no rejection (for N = 2 it is a random rotation of n about the local field, the O(3)
  microcanonical move), and the Metropolis step changes the moduli.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lattgen_classical.tuning import DualAveraging

from lattgen import Action, ConfigError, LatticeError, Sampler, UnitVectors, metropolis_accept

DEFAULT_WIDTH = 0.5


def quadratic_form(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Re z^dagger A z per site, shape (batch, *lattice)."""
    return (z.conj() * (a @ z.unsqueeze(-1)).squeeze(-1)).sum(-1).real


class CPNLocal(Sampler):
    """Checkerboard Metropolis (small rotations) and phase heatbath sweeps for the quartic CP^{N-1} action."""

    def __init__(self, action: Action, *, n_chains: int = 64, device="cpu", dtype=torch.float64,
                 generator=None, model: Any = None, n_hits: int = 1, phase_heatbath: bool = True,
                 proposal_width: float | None = None, target_acceptance: float = 0.5, init: str = "random"):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        if not isinstance(action.field_space, UnitVectors) or getattr(action, "local_field", None) is None:
            raise ConfigError("sampler 'cpn_local' needs the quartic CP^(N-1) action (action cpn, "
                              "form = \"quartic\"); use sphere_hmc for other actions")
        if not self.lattice.bipartite:
            raise LatticeError(f"sampler 'cpn_local' updates a checkerboard and needs even extents, got "
                               f"lattice {list(self.lattice.shape)}; use sphere_hmc")
        if init not in ("random", "cold"):
            raise ConfigError(f"sampler.init: {init!r} is not valid; choose random or cold")
        self.space = action.field_space
        self.n_hits = int(n_hits)
        self.phase_heatbath = bool(phase_heatbath)
        self.target_acceptance = float(target_acceptance)
        self.init = init
        make = self.space.random if init == "random" else self.space.cold
        kwargs = {"generator": generator} if init == "random" else {}
        self.state = make(self.n_chains, device=self.device, dtype=dtype, **kwargs)
        self._masks = [self.lattice.checkerboard(c, device=self.device, dtype=torch.bool) for c in (0, 1)]
        self.tuned = proposal_width is None
        self.proposal_width = float(proposal_width or DEFAULT_WIDTH)
        self._tuner = (DualAveraging(self.proposal_width, self.target_acceptance, lower=1e-4, upper=1e2)
                       if self.tuned else None)
        self._frozen = not self.tuned

    def _width(self, tune: bool) -> float:
        if self._tuner is None:
            return self.proposal_width
        if tune:
            return self._tuner.current
        if not self._frozen:
            self.proposal_width = self._tuner.final
            self._frozen = True
        return self.proposal_width

    def _metropolis(self, z, a, width):
        """One proposal at every site of z (batch, sites, N) with local fields a; (z', accepted)."""
        xi = torch.randn(z.shape, generator=self.generator, device=z.device, dtype=z.dtype) * math.sqrt(2.0)
        prop = z + width * xi
        prop = prop / torch.linalg.vector_norm(prop, dim=-1, keepdim=True)
        a64 = a.to(torch.complex128)
        ds = -(quadratic_form(prop.to(torch.complex128), a64) - quadratic_form(z.to(torch.complex128), a64))
        acc = metropolis_accept(-ds, self.generator)
        return torch.where(acc.unsqueeze(-1), prop, z), acc

    def _phases(self, z, a):
        """Uniform phases of the components of z in the eigenbasis of a (per site)."""
        _, vecs = torch.linalg.eigh(a)
        c = (vecs.conj().transpose(-1, -2) @ z.unsqueeze(-1)).squeeze(-1)
        u = torch.rand(c.shape, generator=self.generator, device=z.device, dtype=z.real.dtype)
        c = c * torch.polar(torch.ones_like(u), 2.0 * math.pi * u)
        new = (vecs @ c.unsqueeze(-1)).squeeze(-1)
        return new / torch.linalg.vector_norm(new, dim=-1, keepdim=True)

    @torch.no_grad()
    def step(self, tune: bool = False) -> torch.Tensor:
        """One sweep (both colours); returns the fraction of accepted Metropolis proposals per chain."""
        width = self._width(tune)
        z = self.state
        accepted = torch.zeros(self.n_chains, dtype=torch.float64, device=self.device)
        for mask in self._masks:
            a = self.action.local_field(z)[:, mask]  # (batch, V/2, N, N): this colour's sites only
            zc = z[:, mask]
            for _ in range(self.n_hits):
                zc, acc = self._metropolis(zc, a, width)
                accepted += acc.sum(dim=1).to(torch.float64)
            if self.phase_heatbath:
                zc = self._phases(zc, a)
            z = z.clone()
            z[:, mask] = zc
        self.state = z
        rate = accepted / (self.n_hits * self.lattice.volume)
        if tune and self._tuner is not None:
            self.proposal_width = self._tuner.update(self.chain_mean(rate))
        return rate

    def info(self) -> dict[str, Any]:
        return {"sampler": "cpn_local", "n_chains": self.n_chains, "n_hits": self.n_hits,
                "phase_heatbath": self.phase_heatbath, "proposal_width": self.proposal_width,
                "proposal_width_tuned": self.tuned, "init": self.init}
