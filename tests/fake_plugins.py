"""Tiny plugins for registry/config tests that must not depend on the built-in plugins."""

from __future__ import annotations

import torch

from lattgen import Param, hookimpl
from lattgen.action import Action
from lattgen.sampler import Sampler


class GaussAction(Action):
    """S = (m2/2) sum_x phi_x^2: independent Gaussian sites."""

    z2_symmetric = True

    def __init__(self, lattice, m2=1.0):
        super().__init__(lattice)
        self.m2 = m2

    def action(self, phi):
        return 0.5 * self.m2 * (phi**2).sum(dim=self.lattice.dims)


class ExactGaussSampler(Sampler):
    """Draws every site afresh from N(0, 1/m2): an exact, trivially uncorrelated chain."""

    def __init__(self, action, *, n_chains, device, dtype, generator, model=None):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)

    def step(self, tune=False):
        self.state = torch.randn(self.state.shape, generator=self.generator, device=self.device,
                                 dtype=self.dtype) / self.action.m2**0.5
        return torch.ones(self.n_chains, device=self.device)


class GaussPlugin:
    @hookimpl
    def lattgen_register_actions(self, register):
        register("gauss", GaussAction, params=(Param("m2", "float", 1.0, "mass squared", min=0, min_exclusive=True),))

    @hookimpl
    def lattgen_register_samplers(self, register):
        register("hmc", ExactGaussSampler,
                 params=(Param("n_chains", "int", 4, "chains", min=1),), doc="stand-in named hmc")
        register("exact", ExactGaussSampler, params=(Param("n_chains", "int", 4, "chains", min=1),))


class DuplicatePlugin:
    @hookimpl
    def lattgen_register_actions(self, register):
        register("gauss", GaussAction)


class BrokenPlugin:
    @hookimpl
    def lattgen_register_actions(self, register):
        raise RuntimeError("boom")
