"""Hybrid Monte Carlo (Duane, Kennedy, Pendleton, Roweth 1987), vectorised over many chains.

One ``step`` is one trajectory per chain: Gaussian momenta from the run's generator, molecular
dynamics with the action's (analytic) force, then a Metropolis test on Delta H in float64. The
integrator is the 2nd-order minimum-norm Omelyan scheme (Omelyan, Mryglod, Folk, Comput. Phys.
Commun. 151 (2003) 272; lambda = 0.1931833) or leapfrog. The step size may be tuned to a target
acceptance by dual averaging while ``step(tune=True)`` (thermalisation) and is frozen afterwards,
so the measured chain is an exact, time-homogeneous Markov chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lattgen import Action, ConfigError, Sampler, metropolis_accept

from .common import acceptance_probability, initial_state
from .tuning import DualAveraging

#: Omelyan's minimum-norm lambda for the position (P-Q-P-Q-P) form, eq. (31) of the paper
OMELYAN_LAMBDA = 0.1931833275037836
#: trajectory length used when neither it nor (n_steps and step_size) is given
DEFAULT_TRAJECTORY_LENGTH = 3.0
#: most MD steps per trajectory the step-size tuner may ask for
MAX_MD_STEPS = 1000

Force = Callable[[torch.Tensor], torch.Tensor]


def _axpy(y: torch.Tensor, x: torch.Tensor, c) -> None:
    """y += c x in place; c is a float or a per-chain tensor broadcastable to x."""
    if isinstance(c, torch.Tensor):
        y.addcmul_(x, c)
    else:
        y.add_(x, alpha=c)


def leapfrog(phi: torch.Tensor, p: torch.Tensor, force: Force, eps, n_steps: int,
             initial_force: torch.Tensor | None = None) -> torch.Tensor:
    """In place: n_steps kick-drift-kick leapfrog steps of size eps; returns the force at the end.

    Force evaluations: n_steps, plus one unless ``initial_force`` (= force(phi)) is given.
    """
    f = force(phi) if initial_force is None else initial_force
    _axpy(p, f, -0.5 * eps)
    for i in range(n_steps):
        _axpy(phi, p, eps)
        f = force(phi)
        _axpy(p, f, (-eps) if i < n_steps - 1 else (-0.5 * eps))
    return f


def omelyan(phi: torch.Tensor, p: torch.Tensor, force: Force, eps, n_steps: int,
            initial_force: torch.Tensor | None = None) -> torch.Tensor:
    """In place: n_steps Omelyan 2MN steps P(l eps) Q(eps/2) P((1-2l) eps) Q(eps/2) P(l eps).

    Adjacent P(l eps) kicks of consecutive steps are merged: 2 n_steps force evaluations, plus one
    unless ``initial_force`` is given; returns the force at the end. Its leading energy error is
    ~10x smaller than leapfrog's, so steps ~2x longer keep the same acceptance.
    """
    lam = OMELYAN_LAMBDA
    kick_end, kick_mid, drift = -lam * eps, -(1.0 - 2.0 * lam) * eps, 0.5 * eps
    f = force(phi) if initial_force is None else initial_force
    _axpy(p, f, kick_end)
    for i in range(n_steps):
        _axpy(phi, p, drift)
        _axpy(p, force(phi), kick_mid)
        _axpy(phi, p, drift)
        f = force(phi)
        _axpy(p, f, 2.0 * kick_end if i < n_steps - 1 else kick_end)
    return f


INTEGRATORS = {"omelyan": omelyan, "leapfrog": leapfrog}
#: force evaluations per MD step of each integrator (plus one at the start unless cached)
FORCES_PER_STEP = {"omelyan": 2, "leapfrog": 1}


@dataclass(frozen=True)
class MDSchedule:
    """How the trajectory is cut into MD steps, from (trajectory_length, n_steps, step_size).

    | given                          | step size             | MD steps per trajectory |
    |--------------------------------|-----------------------|-------------------------|
    | n_steps and step_size          | fixed                 | n_steps                 |
    | trajectory_length and n_steps  | fixed = length/n      | n_steps                 |
    | n_steps only                   | tuned                 | n_steps                 |
    | step_size (and length)         | fixed                 | round(length/step)      |
    | neither (length or default)    | tuned                 | round(length/step)      |
    """

    trajectory_length: float | None
    n_steps: int | None
    step_size: float | None

    @property
    def tuned(self) -> bool:
        return self.step_size is None

    @classmethod
    def resolve(cls, trajectory_length: float | None, n_steps: int | None,
                step_size: float | None) -> MDSchedule:
        """Check the combination and fill in what follows from it (see the class table)."""
        tau, n, eps = trajectory_length, n_steps, step_size
        if n is not None and eps is not None:
            if tau is not None and not math.isclose(tau, n * eps, rel_tol=1e-9):
                raise ConfigError(
                    f"sampler: trajectory_length = {tau} but n_steps * step_size = {n * eps}; "
                    "give at most two of trajectory_length, n_steps and step_size"
                )
            return cls(None, n, eps)
        if n is not None:
            return cls(None, n, None) if tau is None else cls(None, n, tau / n)
        return cls(tau if tau is not None else DEFAULT_TRAJECTORY_LENGTH, None, eps)

    def steps_for(self, eps: float) -> int:
        """MD steps of a trajectory at step size eps."""
        if self.n_steps is not None:
            return self.n_steps
        return max(1, min(MAX_MD_STEPS, round(self.trajectory_length / eps)))

    def initial_step_size(self) -> float:
        """The fixed step size, or the tuner's starting guess (10 steps per trajectory)."""
        if self.step_size is not None:
            return self.step_size
        return (self.trajectory_length or 1.0) / 10.0 if self.n_steps is None else 0.1

    def step_bounds(self) -> tuple[float, float]:
        """Range the tuner may explore: at least one and at most MAX_MD_STEPS steps."""
        if self.n_steps is None:
            return self.trajectory_length / MAX_MD_STEPS, self.trajectory_length
        return 1e-6, 100.0


def kinetic_energy(p: torch.Tensor) -> torch.Tensor:
    """sum_x p_x^2 / 2 per chain, accumulated and returned in float64."""
    return 0.5 * (p * p).sum(dim=tuple(range(1, p.dim())), dtype=torch.float64)


class HMC(Sampler):
    """Hybrid Monte Carlo on n_chains chains at once; exact after thermalisation (step size frozen).

    Starts from the field space's hot (``init="random"``: i.i.d. N(0, 1) real fields) or cold
    start (``"cold"``); after each trajectory the field is mapped back onto its manifold (link
    angles wrapped into (-pi, pi]: a measure-preserving bijection of the torus). S and the force
    of the current state are cached between trajectories (recomputed if ``state`` is replaced);
    Delta H is formed in float64. Any action works (autograd force if it has no analytic one).
    """

    def __init__(
        self,
        action: Action,
        *,
        n_chains: int = 128,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        model: Any = None,
        integrator: str = "omelyan",
        trajectory_length: float | None = None,
        n_steps: int | None = None,
        step_size: float | None = None,
        target_acceptance: float = 0.8,
        trajectory_jitter: float = 0.5,
        init: str = "random",
    ):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        if integrator not in INTEGRATORS:
            raise ConfigError(f"sampler.integrator: {integrator!r} is not valid; choose one of: "
                              + ", ".join(INTEGRATORS))
        if not 0.0 <= trajectory_jitter < 1.0:
            raise ConfigError(f"sampler.trajectory_jitter: must be in [0, 1), got {trajectory_jitter}")
        if not 0.0 < target_acceptance < 1.0:
            raise ConfigError(f"sampler.target_acceptance: must be in (0, 1), got {target_acceptance}")
        self.integrator = integrator
        self._integrate = INTEGRATORS[integrator]
        self.schedule = MDSchedule.resolve(trajectory_length, n_steps, step_size)
        self.target_acceptance = float(target_acceptance)
        self.trajectory_jitter = float(trajectory_jitter)
        self.init = init
        self.space = action.field_space
        if self.space.complex:
            raise ConfigError(f"sampler 'hmc' moves real coordinates; the action's {self.space!r} is complex "
                              "(use a sampler of the theory's plugin)")
        self.state = initial_state(self.space, self.n_chains, init,
                                   generator=generator, device=self.device, dtype=dtype)
        self.step_size = self.schedule.initial_step_size()
        lo, hi = self.schedule.step_bounds()
        self._tuner = (DualAveraging(self.step_size, self.target_acceptance, lower=lo, upper=hi)
                       if self.schedule.tuned else None)
        self._frozen = self._tuner is None
        self._cache: tuple[torch.Tensor, int, torch.Tensor, torch.Tensor] | None = None  # state, version, S, F
        self._n_measured = 0
        self._sum_exp_mdh = torch.zeros((), dtype=torch.float64, device=self.device)
        self._sum_acc_prob = torch.zeros((), dtype=torch.float64, device=self.device)
        self._force_evals = 0
        self._jitter_generator: torch.Generator | None = None

    # -- pieces ---------------------------------------------------------------------------
    def _action64(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi) in float64, shape (n_chains,): ``action.action_float64`` (an action may sum its
        densities in float64 from phi's dtype, sparing float32 runs the float64 temporaries)."""
        return self.action.action_float64(phi)

    def _current(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, force) of the current state, cached across trajectories (recomputed if replaced)."""
        st = self.state
        if self._cache is None or self._cache[0] is not st or self._cache[1] != st._version:
            self._cache = (st, st._version, self._action64(st), self.action.force(st))
        return self._cache[2], self._cache[3]

    def _current_action(self) -> torch.Tensor:
        """S of the current state, float64 (cached)."""
        return self._current()[0]

    def _md_steps(self, eps: float) -> int:
        """MD steps of this trajectory: n, or uniform in [n (1 - J), n (1 + J)] (J = jitter, >= 1).

        Drawn independently of the state, so every chain still satisfies detailed balance; varying
        the trajectory length breaks resonances of near-harmonic modes (Mackenzie 1989).
        """
        n = self.schedule.steps_for(eps)
        if self.trajectory_jitter == 0.0:
            return n
        lo = max(1, math.floor(n * (1.0 - self.trajectory_jitter)))
        hi = max(lo, math.ceil(n * (1.0 + self.trajectory_jitter)))
        draw = torch.randint(lo, hi + 1, (1,), generator=self._host_generator(), device="cpu")
        return int(draw.item())

    def _host_generator(self) -> torch.Generator | None:
        """Where the MD step count is drawn: the run's generator on the CPU; on a GPU a host
        generator seeded once from it, so the count (which the host loop needs) costs no
        device-to-host copy and synchronisation per trajectory."""
        if self.device.type == "cpu":
            return self.generator
        if self._jitter_generator is None:
            seed = torch.randint(0, 2**62, (1,), generator=self.generator, device=self.device)
            self._jitter_generator = torch.Generator().manual_seed(int(seed))
        return self._jitter_generator

    def _step_size_for(self, tune: bool) -> float:
        """Tuner's current value while tuning; the averaged value, frozen, from the first exact step on."""
        if self._tuner is None:
            return self.step_size
        if tune:
            self._frozen = False
            return self._tuner.current
        if not self._frozen:
            self.step_size = self._tuner.final
            self._frozen = True
        return self.step_size

    # -- the Sampler interface ------------------------------------------------------------
    @torch.no_grad()
    def step(self, tune: bool = False) -> torch.Tensor:
        """One trajectory per chain; returns 0/1 acceptance per chain (float64)."""
        eps = self._step_size_for(tune)
        n_md = self._md_steps(eps)
        phi0 = self.state
        s0, f0 = self._current()
        p = torch.randn(phi0.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        h0 = s0 + kinetic_energy(p)
        phi = phi0.clone()
        f1 = self._integrate(phi, p, self.action.force, eps, n_md, initial_force=f0)
        self._force_evals = FORCES_PER_STEP[self.integrator] * n_md
        phi = self.space.project(phi)  # back onto the manifold (angles wrapped; S is periodic)
        s1 = self._action64(phi)
        log_ratio = h0 - (s1 + kinetic_energy(p))
        acc = metropolis_accept(log_ratio, self.generator)
        site_acc = acc.view((-1,) + (1,) * (phi.dim() - 1))
        self.state = torch.where(site_acc, phi, phi0)
        self._cache = (self.state, self.state._version, torch.where(acc, s1, s0), torch.where(site_acc, f1, f0))
        prob = acceptance_probability(log_ratio)
        if tune and self._tuner is not None:
            self.step_size = self._tuner.update(self.chain_mean(prob))
        elif not tune:
            self._n_measured += 1
            self._sum_acc_prob += prob.mean()
            self._sum_exp_mdh += torch.exp(torch.nan_to_num(log_ratio, nan=-torch.inf)).mean()
        return acc.to(torch.float64)

    def info(self) -> dict[str, Any]:
        """Settings and the tuned step size; <exp(-dH)> should be 1 within errors (Creutz)."""
        n_md = self.schedule.steps_for(self.step_size)
        n = max(self._n_measured, 1)
        return {
            "sampler": "hmc",
            "integrator": self.integrator,
            "n_chains": self.n_chains,
            "step_size": self.step_size,
            "step_size_tuned": self.schedule.tuned,
            "n_md_steps": n_md,
            "trajectory_length": n_md * self.step_size,  # mean, when jittered
            "trajectory_jitter": self.trajectory_jitter,
            "target_acceptance": self.target_acceptance,
            "force_evaluations_last_trajectory": self._force_evals,  # the start's is cached
            "init": self.init,
            "mean_acceptance_probability": float(self._sum_acc_prob) / n if self._n_measured else None,
            "mean_exp_minus_delta_h": float(self._sum_exp_mdh) / n if self._n_measured else None,
        }
