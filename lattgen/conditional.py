"""Conditional (amortised) models q(phi | c): one model for a range of an action's couplings c.

An action declares its continuous couplings with ``Param(..., coupling=True)`` (their min/max
are the valid domain). A ``ConditionalModel`` is trained over a declared box of them (for
example ``[model] couplings = {beta = [lo, hi]}``): reverse KL with couplings drawn uniformly per
configuration, L = E_c E_{phi ~ q(.|c)} [log q(phi|c) + S(phi; c)] (``Action.action_at``), as in
conditional normalizing flows for lattice parameter scans (Singha et al., arXiv 2207.00980). At a fixed point
(``condition``) it is an ordinary model: ``sample``/``log_prob`` are q(. | point), and any exact
sampler built on it (imh) stays exact, inside the range or outside it (outside: a warning).
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from .action import Action
from .errors import ConfigError, LattgenWarning
from .model import GenerativeModel


def coupling_ranges(action: Action, table: Mapping[str, Any] | None, where: str = "model.couplings"
                    ) -> dict[str, tuple[float, float]]:
    """The checked box {name: (lo, hi)} of ``table`` over ``action``'s couplings.

    ``None``: every coupling of the action, +-10% around its value (+-0.1 at 0), kept inside its
    valid domain. ConfigError names the key for an unknown coupling, a malformed pair, lo > hi or a
    bound outside the coupling's valid domain (its Param's min/max).
    """
    params = action.coupling_params
    if not params:
        raise ConfigError(f"{where}: action {action.name!r} declares no continuous couplings to condition on")
    point = action.couplings()
    if table is None:
        out = {}
        for name, p in params.items():
            v = point[name]
            half = 0.1 * abs(v) if v != 0 else 0.1
            lo, hi = v - half, v + half
            if p.min is not None:
                lo = max(lo, p.min)
            if p.max is not None:
                hi = min(hi, p.max)
            out[name] = (lo, hi)
        return out
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{where}: expected a table of ranges {{name = [lo, hi]}}")
    out = {}
    for name, pair in table.items():
        if name not in params:
            raise ConfigError(f"{where}.{name}: not a coupling of action {action.name!r}; its couplings "
                              f"are: {', '.join(params)}")
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"{where}.{name}: expected [lo, hi], got {pair!r}")
        lo, hi = (params[name].validate(v, f"{where}.{name}[{i}]") for i, v in enumerate(pair))
        if lo > hi:
            raise ConfigError(f"{where}.{name}: lo = {lo} > hi = {hi}")
        out[name] = (float(lo), float(hi))
    return out


class ConditionalModel(GenerativeModel):
    """q(phi | c) over a box of couplings; at the current point (``condition``) an ordinary model.

    Subclasses implement ``sample_at`` and ``log_prob_at`` with per-configuration couplings
    (a dict of (batch,) tensors over ``coupling_range``'s names). Couplings of the action that
    are not in the range are fixed at their training values (``fixed``): a point that moves one
    of them is refused (the model was never conditioned on it).
    """

    def __init__(self, action: Action, coupling_range: Mapping[str, tuple[float, float]]):
        super().__init__(action.lattice)
        self.init_couplings(action, coupling_range)

    def init_couplings(self, action: Action, coupling_range: Mapping[str, tuple[float, float]]) -> None:
        """Record the trained box; the point starts at the action's couplings (a subclass that
        also derives from another model calls this after that model's ``__init__``)."""
        self.coupling_range = {k: (float(lo), float(hi)) for k, (lo, hi) in coupling_range.items()}
        values = action.couplings()
        self.fixed = {k: v for k, v in values.items() if k not in self.coupling_range}
        self.point = {k: values.get(k, 0.5 * (lo + hi)) for k, (lo, hi) in self.coupling_range.items()}
        self.draw_tilt = {k: 0.0 for k in self.coupling_range}

    def set_draw_tilt(self, table: Mapping[str, Any] | None, where: str = "model.couplings_tilt") -> None:
        """Tilt the training draw of each named coupling: density 1 + t (2u - 1) in u = (c - lo)/(hi - lo).

        t in [-1, 1]; t > 0 draws more couplings near hi (t = 0.5: 3x more at hi than at lo), to
        spend training where the target is hardest. ConfigError names the key for a coupling that
        is not in the trained range or a t outside [-1, 1]."""
        if table is None:
            return
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table {{name = t}} with t in [-1, 1]")
        for name, t in table.items():
            if name not in self.coupling_range:
                raise ConfigError(f"{where}.{name}: not a coupling of the trained range (its couplings: "
                                  f"{', '.join(self.coupling_range)})")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not -1.0 <= float(t) <= 1.0:
                raise ConfigError(f"{where}.{name}: expected a number in [-1, 1], got {t!r}")
            self.draw_tilt[name] = float(t)

    # -- the point -----------------------------------------------------------------------------
    def condition(self, point: Mapping[str, float]) -> ConditionalModel:
        """Set the point of ``sample``/``log_prob`` (a coupling not given keeps its value).

        ConfigError for a coupling the model was not conditioned on at another value than the
        trained one; a LattgenWarning outside the trained range (sampling stays exact there)."""
        new = dict(self.point)
        for name, value in point.items():
            value = float(value)
            if name in self.coupling_range:
                new[name] = value
            elif name in self.fixed:
                if not math.isclose(value, self.fixed[name], rel_tol=1e-12, abs_tol=1e-12):
                    raise ConfigError(
                        f"{name} = {value:g}: this conditional model was not conditioned on {name} (trained "
                        f"at {name} = {self.fixed[name]:g} only; it is conditioned on "
                        f"{', '.join(self.coupling_range)}); train one with [model] couplings including {name}")
            else:
                raise ConfigError(f"{name!r} is not a coupling of this conditional model (its couplings: "
                                  f"{', '.join([*self.coupling_range, *self.fixed])})")
        outside = [f"{k} = {v:g} not in [{self.coupling_range[k][0]:g}, {self.coupling_range[k][1]:g}]"
                   for k, v in new.items() if not self.coupling_range[k][0] <= v <= self.coupling_range[k][1]]
        if outside and new != self.point:  # once per new point
            warnings.warn(f"conditional model used outside its trained range ({'; '.join(outside)}): "
                          "sampling stays exact but acceptance may be poor", LattgenWarning, stacklevel=2)
        self.point = new
        return self

    def point_tensors(self, n: int) -> dict[str, torch.Tensor]:
        """The current point as per-configuration tensors (n,), float64."""
        return {k: torch.full((n,), v, dtype=torch.float64, device=self.device) for k, v in self.point.items()}

    def draw_couplings(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n couplings drawn over the trained box, float64 tensors (n,): uniformly, or with the
        density 1 + t (2u - 1) of ``set_draw_tilt`` (inverse CDF: (1 - t) u + t u^2 = r)."""
        out = {}
        for k, (lo, hi) in self.coupling_range.items():
            u = torch.rand(n, generator=generator, dtype=torch.float64, device=self.device)
            t = self.draw_tilt.get(k, 0.0)
            if t != 0.0:
                u = (torch.sqrt((1.0 - t) ** 2 + 4.0 * t * u) - (1.0 - t)) / (2.0 * t)
            out[k] = lo + (hi - lo) * u
        return out

    def normalised(self, couplings: Mapping[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """(batch, k) network input: each coupling mapped to [-1, 1] over its range (0 for lo = hi)."""
        cols = []
        for k, (lo, hi) in self.coupling_range.items():
            c = couplings[k].to(torch.float64)
            cols.append(2.0 * (c - lo) / (hi - lo) - 1.0 if hi > lo else torch.zeros_like(c))
        return torch.stack(cols, dim=1).to(dtype)

    # -- the model -----------------------------------------------------------------------------
    @abc.abstractmethod
    def sample_at(self, couplings: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi, log q(phi | c)) with one configuration per entry of the (batch,) couplings."""

    @abc.abstractmethod
    def log_prob_at(self, phi: torch.Tensor, couplings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log q(phi | c), shape (batch,)."""

    def sample(self, n, generator=None):
        return self.sample_at(self.point_tensors(n), generator)

    def log_prob(self, phi):
        return self.log_prob_at(phi, self.point_tensors(phi.shape[0]))


def condition_on(model: GenerativeModel | None, action: Action) -> None:
    """Set a ``ConditionalModel``'s point to ``action``'s couplings (no-op for other models)."""
    if isinstance(model, ConditionalModel):
        model.condition(action.couplings())
