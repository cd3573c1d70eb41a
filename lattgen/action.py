"""The Action interface: a lattice theory is its Euclidean action S(phi), weight exp(-S)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from .errors import ConfigError
from .field import FieldSpace, RealField
from .lattice import Lattice


class Action(abc.ABC):
    """A lattice action S(phi) for fields of shape (batch, *field_space.shape).

    Subclasses implement ``action``; ``force`` defaults to autograd and should be overridden
    with the analytic derivative where one exists (HMC calls it in its hot loop). The field
    space (what a configuration is) defaults to one real number per site; a theory on links or
    on a curved target space overrides ``make_field_space``.
    """

    #: the registered name (set when the registry builds it): its theory's key (``Registry.theory``)
    name: str = ""
    #: the action is invariant under phi -> -phi (lets samplers add a random Z2 flip)
    z2_symmetric: bool = False
    #: the action is invariant under lattice translations (lets IMH add random translations)
    translation_invariant: bool = True
    #: the continuous couplings, name -> Param (``Param(coupling=True)``; the registry sets it when
    #: it builds the action): what a conditional model and ``lattgen scan`` may vary
    coupling_params: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, lattice: Lattice):
        self.lattice = lattice
        self.field_space: FieldSpace = self.make_field_space(lattice)

    def make_field_space(self, lattice: Lattice) -> FieldSpace:
        """What one configuration is (default: a real number per site, ``RealField``)."""
        return RealField(lattice)

    @abc.abstractmethod
    def action(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi), shape (batch,), in phi's dtype."""

    def __call__(self, phi: torch.Tensor) -> torch.Tensor:
        return self.action(phi)

    def force(self, phi: torch.Tensor) -> torch.Tensor:
        """dS/dphi, shape of phi. Default: autograd (override with the analytic form)."""
        with torch.enable_grad():
            x = phi.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.action(x).sum(), x)
        return g

    def local_action(self, phi: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Optional, for local (checkerboard) updates: the terms of S that contain phi_x, per site.

        Shape of phi; the value at each site x of ``mask`` (one checkerboard colour, bool) is the
        sum of all terms of S depending on phi_x, 0 elsewhere. Sites of one colour must not share
        a term, so that changing all of them changes S by the sum of per-site differences (the
        ``metropolis`` sampler relies on this). None if the action has no such local form.
        """
        return None

    @property
    def params(self) -> dict[str, Any]:
        """Parameters that define this action (written to results.json)."""
        return {}

    def couplings(self) -> dict[str, float]:
        """The values of this action's continuous couplings (``coupling_params``) at its point."""
        return {name: float(self.params[name]) for name in self.coupling_params if name in self.params}

    def action_at(self, phi: torch.Tensor, couplings: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S(phi_i; c_i) with per-configuration couplings: each value of ``couplings`` has shape
        (batch,); a coupling not given keeps this action's value. Shape (batch,), phi's dtype.

        What an amortised model's training needs (couplings drawn per configuration). Default:
        unsupported; an action with couplings overrides it with a vectorised form.
        """
        raise ConfigError(f"action {self.name or type(self).__name__!r} cannot evaluate per-configuration "
                          "couplings (Action.action_at); a conditional model cannot be trained on it")

    def check_couplings(self, couplings: Mapping[str, Any], n: int) -> None:
        """ConfigError unless every key is a coupling of this action with a value of shape (n,)."""
        for name, value in couplings.items():
            if name not in self.coupling_params:
                raise ConfigError(f"{name!r} is not a coupling of action {self.name or type(self).__name__!r}; "
                                  f"its couplings are: {', '.join(self.coupling_params) or '(none)'}")
            if tuple(value.shape) != (n,):
                raise ValueError(f"coupling {name}: expected shape ({n},), got {tuple(value.shape)}")

    def action_float64(self, phi: torch.Tensor) -> torch.Tensor:
        """S(phi) in float64 whatever phi's dtype (Metropolis tests on Delta S of O(V) need it).

        Default: the action of phi promoted to float64; override when a cheaper exact form exists.
        """
        return self.action(phi.to(torch.complex128 if phi.is_complex() else torch.float64)).to(torch.float64)

    def exact(self) -> dict[str, Any] | None:
        """Exact results where known, keyed by observable name (for example a free field's
        susceptibility); None where nothing is known exactly."""
        return None
