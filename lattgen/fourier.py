"""Fourier tools for translation-invariant Gaussian fields on the periodic lattice.

A circulant covariance C = F^-1 diag(G~(p)) F has the square root
C^{1/2} z = ifftn(sqrt(G~(p)) * fftn(z)), real because G~(p) = G~(-p). Applied to white noise z,
this samples the free field exactly; it is also the Gaussian free-field flow layer, with
log|det C^{1/2}| = (1/2) sum_p log G~(p).
"""

from __future__ import annotations

import torch

from .lattice import Lattice


def apply_circulant(x: torch.Tensor, eigenvalues: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """Multiply fields x (batch, *shape) by the circulant matrix with the given eigenvalues (*shape).

    ``eigenvalues`` must satisfy e(p) = e(-p) so that the result is real.
    """
    dims = lattice.dims
    xf = torch.fft.fftn(x, dim=dims)
    return torch.fft.ifftn(xf * eigenvalues.to(xf.real.dtype), dim=dims).real


def sample_gaussian_field(
    propagator: torch.Tensor, lattice: Lattice, n: int, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """n exact samples of the Gaussian field with momentum-space propagator G~(p) (shape *shape)."""
    z = torch.randn((n, *lattice.shape), generator=generator, device=propagator.device, dtype=dtype)
    return apply_circulant(z, torch.sqrt(propagator), lattice)


def power_spectrum(phi: torch.Tensor, lattice: Lattice) -> torch.Tensor:
    """|phi~(p)|^2 / V per configuration, shape (batch, *shape); its mean is G~(p)."""
    pf = torch.fft.fftn(phi, dim=lattice.dims)
    return (pf.real**2 + pf.imag**2) / lattice.volume
