"""Local Metropolis with checkerboard updates (Metropolis et al. 1953), vectorised over chains.

One ``step`` is one sweep: every site of colour 0, then every site of colour 1, gets ``n_hits``
proposals phi_x -> phi_x + U(-w, w), each accepted with min(1, exp(-dS_x)) in float64. Sites of
one colour do not interact in a nearest-neighbour action, so all of them are updated at once and
dS_x is local. Supported actions: those whose ``local_action(phi, mask)`` returns the terms of S
containing phi_x at the masked sites (e.g. ``phi4``, ``phi4_standard``); any other action is a
clear ConfigError (use ``hmc``). Needs even extents (a consistent checkerboard).
"""

from __future__ import annotations

from typing import Any

import torch

from lattgen import Action, ConfigError, LatticeError, RealField, Sampler, metropolis_accept

from .common import acceptance_probability, initial_state
from .tuning import DualAveraging

#: proposal width used when none is given, the tuner's starting point
DEFAULT_PROPOSAL_WIDTH = 1.0


def check_local_action(action: Action, probe: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise ConfigError unless the action offers a site-local action for checkerboard updates."""
    if action.local_action(probe, mask) is None:
        raise ConfigError(
            f"sampler 'metropolis' needs an action with a site-local action "
            f"(Action.local_action), which {type(action).__name__} does not provide; "
            "use sampler 'hmc', which needs only the action (and its force)"
        )


class Metropolis(Sampler):
    """Checkerboard local Metropolis on n_chains chains; proposal width tuned only while tuning."""

    def __init__(
        self,
        action: Action,
        *,
        n_chains: int = 64,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        model: Any = None,
        n_hits: int = 1,
        proposal_width: float | None = None,
        target_acceptance: float = 0.5,
        init: str = "random",
    ):
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        lat = self.lattice
        if not lat.bipartite:
            raise LatticeError(
                f"sampler 'metropolis' updates a checkerboard and needs even extents, got lattice "
                f"{list(lat.shape)}; use even extents or sampler 'hmc'"
            )
        if n_hits < 1:
            raise ConfigError(f"sampler.n_hits: must be >= 1, got {n_hits}")
        if proposal_width is not None and not proposal_width > 0:
            raise ConfigError(f"sampler.proposal_width: must be > 0, got {proposal_width}")
        if not 0.0 < target_acceptance < 1.0:
            raise ConfigError(f"sampler.target_acceptance: must be in (0, 1), got {target_acceptance}")
        self.n_hits = int(n_hits)
        self.target_acceptance = float(target_acceptance)
        self.init = init
        self._masks = [lat.checkerboard(parity, device=self.device, dtype=torch.bool) for parity in (0, 1)]
        self._dims = lat.dims
        if not isinstance(action.field_space, RealField):
            raise ConfigError(f"sampler 'metropolis' proposes real shifts per site; the action's "
                              f"{action.field_space!r} is not a real field (use a sampler of the theory's plugin)")
        self.state = initial_state(action.field_space, self.n_chains, init,
                                   generator=generator, device=self.device, dtype=dtype)
        check_local_action(action, self.state[:1], self._masks[0])
        self.proposal_width = float(proposal_width or DEFAULT_PROPOSAL_WIDTH)
        self._tuner = (DualAveraging(self.proposal_width, self.target_acceptance, lower=1e-4, upper=1e3)
                       if proposal_width is None else None)
        self._frozen = self._tuner is None

    def _width_for(self, tune: bool) -> float:
        """Tuner's current width while tuning; the averaged width, frozen, from the first exact step on."""
        if self._tuner is None:
            return self.proposal_width
        if tune:
            self._frozen = False
            return self._tuner.current
        if not self._frozen:
            self.proposal_width = self._tuner.final
            self._frozen = True
        return self.proposal_width

    def _hit(self, phi, local_old, mask, width):
        """One proposal at every site of ``mask``: (new state, its local action, accepted, probability)."""
        noise = torch.rand(phi.shape, generator=self.generator, device=self.device, dtype=self.dtype)
        noise.mul_(2.0 * width).sub_(width).mul_(mask)
        proposal = phi + noise
        local_new = self.action.local_action(proposal, mask)
        log_ratio = (local_old - local_new).to(torch.float64)
        acc = metropolis_accept(log_ratio, self.generator).logical_and_(mask)
        phi = torch.where(acc, proposal, phi)
        local_old = torch.where(acc, local_new, local_old)
        return phi, local_old, acc, log_ratio

    @torch.no_grad()
    def step(self, tune: bool = False) -> torch.Tensor:
        """One sweep (both colours, n_hits each); returns the accepted fraction of proposals per chain."""
        width = self._width_for(tune)
        phi = self.state
        n_acc = torch.zeros(self.n_chains, dtype=torch.float64, device=self.device)
        prob_sum = 0.0
        for mask in self._masks:
            local_old = self.action.local_action(phi, mask)
            for _ in range(self.n_hits):
                phi, local_old, acc, log_ratio = self._hit(phi, local_old, mask, width)
                n_acc += acc.sum(dim=self._dims)
                if tune and self._tuner is not None:
                    prob_sum += self.chain_mean(acceptance_probability(log_ratio)[:, mask])
        self.state = phi
        if tune and self._tuner is not None:
            self.proposal_width = self._tuner.update(prob_sum / (2 * self.n_hits))
        return n_acc / (self.n_hits * self.lattice.volume)

    def info(self) -> dict[str, Any]:
        return {
            "sampler": "metropolis",
            "n_chains": self.n_chains,
            "n_hits": self.n_hits,
            "proposal_width": self.proposal_width,
            "proposal_width_tuned": self._tuner is not None,
            "target_acceptance": self.target_acceptance,
            "init": self.init,
        }
