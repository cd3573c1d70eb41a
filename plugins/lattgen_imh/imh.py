"""Independence Metropolis-Hastings (IMH) with a generative-model proposal.

Every chain proposes phi' ~ q independently of its current state phi and accepts with

    min(1, w(phi') / w(phi)),   w = exp(-S) / q,   log w = -S(phi) - log q(phi)  (float64)

(Hastings 1970; for flows Albergo, Kanwar, Shanahan, arXiv 1904.12072). The chain is exact for
exp(-S)/Z whatever q is, as long as q > 0 where exp(-S) > 0; a better q only shortens the
autocorrelation (the acceptance tends to 1 as q -> p).

Batched proposals. ``batch_size`` steps' proposals for all chains (batch_size * n_chains
configurations) are drawn in one call of ``model.sample`` under ``torch.no_grad()`` and their
log-weights computed at once, S on the float64 field; each ``step`` then consumes one row, so
the network runs once per ``batch_size`` steps. Accept/reject is vectorised over chains in
float64 on the device; nothing is copied to the host in ``step``.

The current state's log-weight is stored, never recomputed. With an exact density this only
saves work. With an estimated density (``model.exact_density = False``, e.g. a VAE) it is what
makes the chain exact: the chain is then IMH on the extended state (phi, q_hat), with proposal
the joint law of what ``model.sample`` returns, and weight exp(-S(phi))/q_hat. Its stationary
phi-marginal is proportional to exp(-S(phi)) q(phi) E[1/q_hat | phi], i.e. exactly exp(-S)/Z
whenever 1/q_hat is unbiased for 1/q(phi) given phi (the pseudo-marginal method, Andrieu &
Roberts, Ann. Stat. 37 (2009) 697). That holds when the estimator q_hat(phi, u) is unbiased for
q under some law pi(u | phi) and ``sample`` draws u from the tilted law q_hat pi / q, which is
what a latent-variable model does by keeping the latent that generated phi among its
importance samples (see lattgen_generative.vae). Re-estimating q at the current state every
step would bias the chain.

Non-finite proposals. A proposal whose log-weight is not finite (log q = -inf or NaN: the model
overflowed; S = inf or NaN) is rejected: its log-weight becomes -inf, so it never enters the
chain, and a later finite proposal is always accepted over it. Without this, a +inf log-weight
would be accepted and freeze the chain (every later comparison inf - inf = NaN). Rejecting
them samples the target restricted to where the model computes finite numbers, exact as long
as that region carries the target's mass; they are counted (``non_finite_proposals``), and a
fraction above ``max_non_finite`` is a SamplingError: the model is broken, not the chain.

Symmetry augmentation (``z2_flip``, ``translate``). The sampler keeps an internal IMH chain X_t
on the model's untransformed proposals, which is exact IMH as above, and outputs
Y_t = g_t X_t with g_t a fresh uniformly random element of the symmetry group (a sign flip
phi -> -phi, a lattice translation, or both), drawn independently every step and never fed
back into X. If the action is invariant under g, each move x -> g x is a p-invariant kernel
(p(g x) = p(x), g a bijection with unit Jacobian), so Y_t has the target marginal whenever X_t
does, and the pair (X_t, g_t) is a Markov chain with stationary law p x uniform(G), of which
Y_t is a function: averages over Y_t are exact. Transforming the internal state instead would
change its weight w(g x) != w(x) (q need not be invariant) and require a new q evaluation. The
gain: during a rejection run X_t repeats, but Y_t changes, which removes the autocorrelation of
observables that are not invariant (e.g. m under the flip); invariant ones (|m|, chi) are
unaffected. The flip requires ``action.z2_symmetric``; translations require the action to be
translation invariant, which every action on the periodic lattice is unless it declares
``translation_invariant = False`` (e.g. one with a position-dependent source).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lattgen import (
    Action,
    ConfigError,
    GenerativeModel,
    LatticeError,
    Sampler,
    SamplingError,
    merge_infos,
    metropolis_accept,
)


class IMH(Sampler):
    """Independence Metropolis-Hastings: n_chains chains, one model proposal per chain and step."""

    exact = True

    def __init__(
        self,
        action: Action,
        *,
        model: GenerativeModel | None,
        n_chains: int = 16,
        batch_size: int = 64,
        z2_flip: bool = False,
        translate: bool = False,
        max_non_finite: float = 0.01,
        device: str | torch.device = "cpu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
    ):
        if model is None:
            raise ConfigError(
                "sampler imh needs a generative model as its proposal: train one with "
                "`lattgen train CONFIG --out RUN_DIR`, then sample it with `lattgen sample RUN_DIR`"
            )
        if batch_size < 1:
            raise ConfigError(f"sampler.batch_size: must be >= 1, got {batch_size}")
        super().__init__(action, n_chains=n_chains, device=device, generator=generator, dtype=dtype)
        if model.lattice != action.lattice:
            raise LatticeError(
                f"the model was built for lattice {list(model.lattice.shape)} but the action lives on "
                f"{list(action.lattice.shape)}; build (or relattice) the model for the action's lattice"
            )
        if z2_flip and not action.z2_symmetric:
            raise ConfigError(
                "sampler.z2_flip: the action is not Z2 symmetric (action.z2_symmetric is False), so a "
                "random phi -> -phi would change the target; set z2_flip = false"
            )
        if translate and not action.translation_invariant:
            raise ConfigError(
                "sampler.translate: the action is not translation invariant "
                "(action.translation_invariant is False); set translate = false"
            )
        self.model = model.to(self.device)
        self.model.eval()
        self.batch_size = int(batch_size)
        self.z2_flip = bool(z2_flip)
        self.translate = bool(translate)
        self.max_non_finite = float(max_non_finite)
        self.space = action.field_space
        self._shape = self.space.shape
        self._bcast = (-1,) + (1,) * len(self._shape)
        self._buffer_phi: torch.Tensor | None = None
        self._buffer_lw: torch.Tensor | None = None
        self._pos = self.batch_size
        self._extents = torch.tensor(self.lattice.shape, device=self.device)
        self._run = torch.zeros(self.n_chains, dtype=torch.int64, device=self.device)
        self._longest_run = torch.zeros((), dtype=torch.int64, device=self.device)
        self._accepted = torch.zeros((), dtype=torch.float64, device=self.device)
        self._nan = torch.zeros((), dtype=torch.int64, device=self.device)
        self._non_finite = torch.zeros((), dtype=torch.int64, device=self.device)
        self._drawn = 0
        self._proposal_log_w: list[torch.Tensor] = []
        self._n_measured = 0
        # internal (untransformed) state and its stored log-weight: start from one proposal each
        self._x, self._lw = self._next_proposal()
        self.state = self._output(self._x)

    # -- proposals ----------------------------------------------------------------------------
    @torch.no_grad()
    def _refill(self) -> None:
        """Draw batch_size * n_chains proposals in one model call; log-weights in float64."""
        n = self.batch_size * self.n_chains
        phi, log_q = self.model.sample(n, self.generator)
        phi = phi.to(device=self.device, dtype=self.space.dtype(torch.float64))  # complex128 for complex fields
        log_w = -self.action(phi) - log_q.to(device=self.device, dtype=torch.float64)
        # a proposal whose weight is not finite is never accepted (module docstring)
        bad = ~torch.isfinite(log_w)
        self._nan += torch.isnan(log_w).sum()
        self._non_finite += bad.sum()
        self._drawn += n
        log_w = torch.where(bad, -torch.inf, log_w)
        self._check_non_finite()  # one scalar read per refill, not per step
        self._buffer_phi = phi.to(self.space.dtype(self.dtype)).reshape(self.batch_size, self.n_chains, *self._shape)
        self._buffer_lw = log_w.reshape(self.batch_size, self.n_chains)
        self._pos = 0

    def _check_non_finite(self) -> None:
        """SamplingError once more than ``max_non_finite`` of the proposals drawn were non-finite."""
        count = int(self._non_finite)
        if count > self.max_non_finite * self._drawn:
            raise SamplingError(
                f"sampler imh: {count} of the model's {self._drawn} proposals "
                f"({count / self._drawn:.1%}) had a non-finite log-weight (log q = -inf/NaN or a "
                f"non-finite action), more than sampler.max_non_finite = {self.max_non_finite:g}: "
                'the model overflows; retrain it (lower train.lr, train.dtype = "float64") or raise '
                "sampler.max_non_finite"
            )

    def _next_proposal(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos >= self.batch_size:
            self._refill()
        k = self._pos
        self._pos += 1
        return self._buffer_phi[k], self._buffer_lw[k]

    # -- symmetry moves on the output -----------------------------------------------------------
    def _translated(self, x: torch.Tensor) -> torch.Tensor:
        """Each chain's field shifted by its own uniformly random lattice vector (periodic)."""
        u = torch.rand((self.n_chains, self.lattice.ndim), generator=self.generator, device=self.device)
        shift = (u * self._extents).long().clamp_(max=self._extents - 1)
        return self.space.translate(x, shift)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """Y = g X with a fresh random symmetry element g per chain (identity without options)."""
        if self.translate:
            x = self._translated(x)
        if self.z2_flip:
            u = torch.rand(self.n_chains, generator=self.generator, device=self.device)
            sign = torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
            x = x * sign.reshape(self._bcast)
        return x

    # -- the Markov step ---------------------------------------------------------------------------
    def step(self, tune: bool = False) -> torch.Tensor:
        """One IMH step of every chain; returns the 0/1 acceptance per chain (sampler dtype).

        Nothing is tuned (``tune`` only marks thermalisation: its proposals are not recorded).
        """
        phi_new, lw_new = self._next_proposal()
        accept = metropolis_accept(lw_new - self._lw, self.generator)
        self._x = torch.where(accept.reshape(self._bcast), phi_new, self._x)
        self._lw = torch.where(accept, lw_new, self._lw)
        self._run = torch.where(accept, 0, self._run + 1)
        if not tune:
            self._longest_run = torch.maximum(self._longest_run, self._run.max())
            self._accepted += accept.sum()
            self._proposal_log_w.append(lw_new)
            self._n_measured += 1
        self.state = self._output(self._x)
        return accept.to(self.dtype)

    @property
    def log_weight(self) -> torch.Tensor:
        """Stored float64 log-weight of every chain's current (untransformed) state, (n_chains,)."""
        return self._lw

    def proposal_log_weights(self) -> torch.Tensor:
        """(n_steps, n_chains) float64 log-weights of the proposals of the measured steps (device).

        The proposals are i.i.d. from q, so these (with observables on the same proposals) feed
        the importance-sampling estimator of ``lattgen.reweight`` and the log-weight histograms.
        """
        if not self._proposal_log_w:
            return torch.zeros((0, self.n_chains), dtype=torch.float64, device=self.device)
        return torch.stack(self._proposal_log_w)

    def info(self) -> dict[str, Any]:
        """Settings and chain statistics for results.json (one host copy)."""
        stats = torch.stack([
            self._accepted / max(self._n_measured * self.n_chains, 1),
            self._longest_run.to(torch.float64),
            self._nan.to(torch.float64),
            self._non_finite.to(torch.float64),
        ]).cpu().tolist()
        return {
            "n_chains": self.n_chains,
            "batch_size": self.batch_size,
            "z2_flip": self.z2_flip,
            "translate": self.translate,
            "pseudo_marginal": not self.model.exact_density,
            "acceptance": stats[0] if self._n_measured else None,
            "longest_rejection_run": int(stats[1]),
            "nan_proposals": int(stats[2]),
            "non_finite_proposals": int(stats[3]),
            "proposals_drawn": self._drawn,
            "max_non_finite": self.max_non_finite,
            "measured_steps": self._n_measured,
        }

    @staticmethod
    def merge_info(infos, n_chains) -> dict[str, Any]:
        """Chains spread over ranks: chain and proposal counts add up, the longest rejection run is the
        longest of any rank, the acceptance is the chain-weighted mean."""
        return merge_infos(infos, n_chains, sums=("n_chains", "nan_proposals", "non_finite_proposals",
                                                  "proposals_drawn"),
                           maxima=("longest_rejection_run",))

    def extras(self) -> dict[str, np.ndarray]:
        """``log_weights``: (n_steps, n_chains) proposal log-weights of the measured steps."""
        return {"log_weights": self.proposal_log_weights().cpu().numpy()}
