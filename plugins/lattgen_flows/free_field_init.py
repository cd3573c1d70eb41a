"""Where a free-field layer starts: the action's exact propagator, else a kinetic guess from S.

* ``action.exact()["propagator"]`` when present (free fields): the flow starts exact.
* Otherwise the curvature of S at phi = 0, K(p) = FFT of one Hessian row, fitted to
  a p_hat^2 + b. When b <= 0 (phi = 0 is unstable: the interacting, near-critical or broken
  regime), b is replaced by a p_hat^2_min, i.e. a correlation length of about L / (2 pi).
"""

from __future__ import annotations

import torch

from lattgen import Action

from .free_field import fit_kinetic


def exact_propagator(action: Action) -> torch.Tensor | None:
    """G~(p) from ``action.exact()`` (float64, lattice shape) or None."""
    exact = action.exact()
    if not exact or exact.get("propagator") is None:
        return None
    return torch.as_tensor(exact["propagator"], dtype=torch.float64)


def hessian_at_zero(action: Action) -> torch.Tensor:
    """K(p): eigenvalues of the Hessian of S at phi = 0 (translation invariance assumed), float64."""
    lat = action.lattice
    zero = torch.zeros((1, *lat.shape), dtype=torch.float64)
    delta = torch.zeros_like(zero)
    delta.view(-1)[0] = 1.0
    _, row = torch.autograd.functional.hvp(lambda x: action.action(x).sum(), zero, delta)
    return torch.fft.fftn(row[0], dim=tuple(range(lat.ndim))).real


def kinetic_guess(action: Action) -> tuple[float, float]:
    """(a, b) of 1/G~(p) = a p_hat^2 + b for an action without exact results (module docstring)."""
    lat = action.lattice
    try:
        a, b, _ = fit_kinetic(hessian_at_zero(action), lat)
    except (RuntimeError, TypeError, ValueError):  # an action autograd cannot differentiate twice
        a, b = 1.0, 0.0
    if not a > 0:
        a = 1.0
    if not b > 0:
        p2 = lat.p_hat_squared(dtype=torch.float64).reshape(-1)
        b = a * float(p2[p2 > 0].min())
    return a, b
