"""A tiny complex-field theory for ensemble tests: uniform unit 2-vectors (CP^1 at beta = 0).

The action is S = 0 on ``UnitVectors(N=2)``; the sampler draws every chain afresh (exact,
uncorrelated); the observable is |z_0|^2 averaged over sites, whose exact mean is 1/N = 1/2.
"""

from __future__ import annotations

import torch

from lattgen import Action, Observable, Param, Sampler, Theory, UnitVectors, hookimpl


class UniformVectors(Action):
    def make_field_space(self, lattice):
        return UnitVectors(lattice, 2)

    def action(self, phi):
        return torch.zeros(phi.shape[0], dtype=torch.float64, device=phi.device)


class FreshVectors(Sampler):
    """Every step a fresh uniform configuration per chain; ``log_weight`` mimics IMH's."""

    def __init__(self, action, *, n_chains, device, dtype, generator, model=None):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        self.log_weight = torch.zeros(n_chains, dtype=torch.float64, device=self.device)

    def step(self, tune=False):
        space = self.action.field_space
        self.state = space.random(self.n_chains, generator=self.generator, device=self.device, dtype=self.dtype)
        self.log_weight = -self.state[..., 0].real.sum(dim=tuple(range(1, self.state.dim() - 1)))
        return torch.ones(self.n_chains, device=self.device)


def weight0(lattice):
    dims = tuple(range(1, lattice.ndim + 1))
    return Observable("weight0", lambda z: (z[..., 0].abs() ** 2).mean(dim=dims).to(torch.float64)[:, None],
                      doc="mean |z_0|^2 (exact 1/N)")


class VectorsPlugin:
    @hookimpl
    def lattgen_register_actions(self, register):
        register("uniform_vectors", UniformVectors, theory=Theory(classical_samplers=("fresh",), observables=("weight0",)))

    @hookimpl
    def lattgen_register_samplers(self, register):
        register("fresh", FreshVectors, params=(Param("n_chains", "int", 4, "chains", min=1),))

    @hookimpl
    def lattgen_register_observables(self, register):
        register("weight0", weight0, field="sphere")
