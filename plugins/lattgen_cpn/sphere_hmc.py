"""HMC on a product of spheres S^{2N-1} (complex unit vectors per site): the geodesic integrator.

Positions z_x in C^N = R^{2N} with |z_x| = 1, momenta p_x in the tangent space Re(z_x^dagger p_x) = 0,
H = S(z) + sum_x |p_x|^2 / 2. One leapfrog step is kick(eps/2) drift(eps) kick(eps/2):

* kick: p <- p - h (g - Re(z^dagger g) z), g = dS/dRe z + i dS/dIm z (the action's force), the
  gradient projected onto the tangent space;
* drift: the exact geodesic flow on each sphere for time eps, a rotation in the (z, p) plane:
  z' = z cos(|p| eps) + p/|p| sin(|p| eps),  p' = p cos(|p| eps) - z |p| sin(|p| eps).

Both maps are symplectic on T*S^{2N-1} and the composition is time-reversible, so the Metropolis
test on Delta H (float64) makes the chain exact (Leimkuhler & Reich, Simulating Hamiltonian
Dynamics (2004) ch. 7; Byrne & Girolami, arXiv 1112.4118). |z| stays 1 to rounding; each drift
renormalises z and re-projects p, which changes nothing beyond rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lattgen_classical.tuning import DualAveraging

from lattgen import Action, ConfigError, Sampler, UnitVectors, metropolis_accept

DEFAULT_TRAJECTORY_LENGTH = 1.0
MAX_MD_STEPS = 500


def tangent(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v minus its radial part: v - Re(z^dagger v) z (per site, last axis the vector)."""
    radial = (z.conj() * v).sum(-1, keepdim=True).real
    return v - radial * z


def geodesic_drift(z: torch.Tensor, p: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact geodesic flow for time eps on each sphere: (z, p) rotated in their plane."""
    speed = torch.linalg.vector_norm(p, dim=-1, keepdim=True)
    angle = speed * eps
    cos, sin = torch.cos(angle), torch.sin(angle)
    direction = p / speed.clamp_min(torch.finfo(speed.dtype).tiny)
    z_new = z * cos + direction * sin
    p_new = p * cos - z * (speed * sin)
    z_new = z_new / torch.linalg.vector_norm(z_new, dim=-1, keepdim=True)
    return z_new, tangent(z_new, p_new)


def leapfrog_on_spheres(z: torch.Tensor, p: torch.Tensor, force, eps: float, n_steps: int,
                        initial_force: torch.Tensor | None = None):
    """n_steps kick-drift-kick steps; returns (z, p, force at the end)."""
    f = force(z) if initial_force is None else initial_force
    p = p - 0.5 * eps * tangent(z, f)
    for i in range(n_steps):
        z, p = geodesic_drift(z, p, eps)
        f = force(z)
        p = p - (eps if i < n_steps - 1 else 0.5 * eps) * tangent(z, f)
    return z, p, f


def kinetic(p: torch.Tensor) -> torch.Tensor:
    """sum_x |p_x|^2 / 2 per chain, float64."""
    p64 = p.to(torch.complex128)
    return 0.5 * (p64.real**2 + p64.imag**2).sum(dim=tuple(range(1, p.dim())))


def tangent_momenta(z: torch.Tensor, generator) -> torch.Tensor:
    """Gaussian momenta of the tangent spaces: N(0, 1) per real component, projected."""
    p = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)  # complex: E|p_k|^2 = 1
    p = p * math.sqrt(2.0)  # torch's complex normal has variance 1/2 per real component
    return tangent(z, p)


class SphereHMC(Sampler):
    """HMC for actions on ``UnitVectors`` (complex unit N-vectors per site); step size tuned, then frozen."""

    def __init__(self, action: Action, *, n_chains: int = 64, device="cpu", dtype=torch.float64,
                 generator=None, model: Any = None, trajectory_length: float = DEFAULT_TRAJECTORY_LENGTH,
                 step_size: float | None = None, target_acceptance: float = 0.8,
                 trajectory_jitter: float = 0.5, init: str = "random"):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        if not isinstance(action.field_space, UnitVectors):
            raise ConfigError(f"sampler 'sphere_hmc' moves unit vectors; the action's {action.field_space!r} "
                              "is not UnitVectors (use hmc)")
        if init not in ("random", "cold"):
            raise ConfigError(f"sampler.init: {init!r} is not valid; choose random or cold")
        self.space = action.field_space
        self.trajectory_length = float(trajectory_length)
        self.target_acceptance = float(target_acceptance)
        self.trajectory_jitter = float(trajectory_jitter)
        self.init = init
        make = self.space.random if init == "random" else self.space.cold
        kwargs = {"generator": generator} if init == "random" else {}
        self.state = make(self.n_chains, device=self.device, dtype=dtype, **kwargs)
        self.tuned = step_size is None
        self.step_size = float(step_size) if step_size is not None else self.trajectory_length / 10
        self._tuner = (DualAveraging(self.step_size, self.target_acceptance,
                                     lower=self.trajectory_length / MAX_MD_STEPS, upper=self.trajectory_length)
                       if self.tuned else None)
        self._frozen = not self.tuned
        self._n_measured = 0
        self._sum_exp_mdh = torch.zeros((), dtype=torch.float64, device=self.device)
        self._last_steps = 0

    def _eps(self, tune: bool) -> float:
        if self._tuner is None:
            return self.step_size
        if tune:
            return self._tuner.current
        if not self._frozen:
            self.step_size = self._tuner.final
            self._frozen = True
        return self.step_size

    def _n_md(self, eps: float) -> int:
        n = max(1, min(MAX_MD_STEPS, round(self.trajectory_length / eps)))
        if self.trajectory_jitter == 0:
            return n
        lo = max(1, math.floor(n * (1 - self.trajectory_jitter)))
        hi = max(lo, math.ceil(n * (1 + self.trajectory_jitter)))
        gen = self.generator if self.device.type == "cpu" else None
        return int(torch.randint(lo, hi + 1, (1,), generator=gen).item())

    @torch.no_grad()
    def step(self, tune: bool = False) -> torch.Tensor:
        eps = self._eps(tune)
        n_md = self._n_md(eps)
        self._last_steps = n_md
        z0 = self.state
        p = tangent_momenta(z0, self.generator)
        h0 = self.action.action_float64(z0) + kinetic(p)
        z1, p1, _ = leapfrog_on_spheres(z0, p, self.action.force, eps, n_md)
        log_ratio = h0 - (self.action.action_float64(z1) + kinetic(p1))
        acc = metropolis_accept(log_ratio, self.generator)
        self.state = torch.where(acc.view((-1,) + (1,) * (z0.dim() - 1)), z1, z0)
        prob = torch.exp(torch.clamp(torch.nan_to_num(log_ratio, nan=-torch.inf), max=0.0))
        if tune and self._tuner is not None:
            self.step_size = self._tuner.update(self.chain_mean(prob))
        elif not tune:
            self._n_measured += 1
            self._sum_exp_mdh += torch.exp(torch.nan_to_num(log_ratio, nan=-torch.inf)).mean()
        return acc.to(torch.float64)

    def info(self) -> dict[str, Any]:
        n = max(self._n_measured, 1)
        return {"sampler": "sphere_hmc", "n_chains": self.n_chains, "step_size": self.step_size,
                "step_size_tuned": self.tuned, "trajectory_length": self.trajectory_length,
                "trajectory_jitter": self.trajectory_jitter, "init": self.init,
                "mean_exp_minus_delta_h": float(self._sum_exp_mdh) / n if self._n_measured else None}
