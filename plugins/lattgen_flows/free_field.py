"""Gaussian free-field layer: phi = C^{1/2} z with C circulant, diagonal in momentum space.

phi = ifftn(sqrt(G~(p)) fftn(z)) (``lattgen.fourier.apply_circulant``), log|det dphi/dz| =
(1/2) sum_p log G~(p), the same for every configuration. White noise z becomes exactly the free
field of propagator G~(p), so a flow starting with this layer starts from the Gaussian part of
the theory. Two spectra:

* ``kinetic``: 1/G~(p) = a p_hat^2 + b, a, b > 0 (two numbers, any lattice size). Exact for
  nearest-neighbour free fields: phi^4 at lam = 0 has a = beta, b = 2 (1 - d beta).
* ``momentum``: one learnable log G~(p) per momentum, symmetrised over p <-> -p so the map stays
  real; any translation-invariant Gaussian, but tied to one lattice.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lattgen import ConfigError, Lattice, LatticeError, apply_circulant

from .lattice_layer import LatticeBijection

SPECTRA = ("kinetic", "momentum")


def reflect_momenta(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """x(-p) for x(p) in FFT ordering on the last ``ndim`` axes (index n -> -n mod L)."""
    dims = tuple(range(x.dim() - ndim, x.dim()))
    return torch.roll(torch.flip(x, dims), shifts=(1,) * ndim, dims=dims)


def fit_kinetic(kernel: torch.Tensor, lattice: Lattice) -> tuple[float, float, float]:
    """Least-squares (a, b) of K(p) = 1/G~(p) = a p_hat^2 + b, and the largest relative residual."""
    k = kernel.to(torch.float64).reshape(-1)
    p2 = lattice.p_hat_squared(dtype=torch.float64).reshape(-1)
    design = torch.stack([p2, torch.ones_like(p2)], dim=1)
    coef = torch.linalg.lstsq(design, k.unsqueeze(1)).solution.squeeze(1)
    resid = float(((design @ coef - k).abs() / k.abs().clamp_min(1e-300)).max())
    return float(coef[0]), float(coef[1]), resid


class FreeFieldLayer(LatticeBijection):
    """phi = C^{1/2} z by FFT; G~(p) kinetic (a p_hat^2 + b)^-1 or per momentum; frozen or learnable."""

    z2_equivariant = True

    def __init__(
        self,
        lattice: Lattice,
        spectrum: str = "kinetic",
        learnable: bool = True,
        a: float = 1.0,
        b: float = 1.0,
        propagator: torch.Tensor | None = None,
    ):
        super().__init__(lattice)
        if spectrum not in SPECTRA:
            raise ConfigError(f"free-field spectrum {spectrum!r} is unknown; choose one of: {', '.join(SPECTRA)}")
        if not (a > 0 and b > 0):
            raise ConfigError(f"the kinetic form needs a > 0 and b > 0 (a positive propagator), got a={a}, b={b}")
        self.spectrum = spectrum
        self.learnable = bool(learnable)
        self.modulation: nn.Module | None = None  # kinetic spectrum of a conditional model (log_propagator)
        # G~(p) = G0(p) exp(delta(p)): the start G0 is kept in float64 (exact free field after
        # model.double()); the learnable (or frozen) correction delta starts at 0.
        if spectrum == "kinetic":
            self.register_buffer("log_a0", torch.tensor(math.log(a), dtype=torch.float64))
            self.register_buffer("log_b0", torch.tensor(math.log(b), dtype=torch.float64))
            self._add("delta_log_a", torch.zeros(()))
            self._add("delta_log_b", torch.zeros(()))
        else:
            p2 = lattice.p_hat_squared(dtype=torch.float64)
            self.register_buffer("log_g0", -torch.log(a * p2 + b))
            self._add("delta_log_g", torch.zeros(lattice.shape))
        self.build_buffers(lattice, torch.device("cpu"), torch.float64)
        if propagator is not None:
            self.init_from_propagator(propagator)

    def _add(self, name: str, value: torch.Tensor) -> None:
        if self.learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def fully_convolutional(self) -> bool:  # type: ignore[override]
        return self.spectrum == "kinetic"

    def build_buffers(self, lattice, device, dtype):
        """hat p^2 on the lattice momenta, float64 (non-persistent: rebuilt for each lattice)."""
        self.register_buffer("p_hat2", lattice.p_hat_squared(device=device, dtype=torch.float64), persistent=False)

    @torch.no_grad()
    def init_from_propagator(self, propagator: torch.Tensor) -> None:
        """Set G~(p) from an exact propagator (kinetic: least-squares a, b; momentum: log G~ itself)."""
        if tuple(propagator.shape) != self.lattice.shape:
            raise LatticeError(
                f"propagator of shape {tuple(propagator.shape)} does not fit lattice {list(self.lattice.shape)}"
            )
        if not bool((propagator > 0).all()):
            raise ConfigError("the propagator must be positive at every momentum to start a free-field layer")
        if self.spectrum == "kinetic":
            a, b, _ = fit_kinetic(1.0 / propagator.to(torch.float64), self.lattice)
            if not (a > 0 and b > 0):
                raise ConfigError(
                    f"the propagator is not of the kinetic form 1/(a p_hat^2 + b) with a, b > 0 (fit a={a:.4g}, "
                    f"b={b:.4g}); use spectrum = \"momentum\""
                )
            self.set_kinetic(a, b)
        else:
            self.log_g0.copy_(torch.log(propagator.to(torch.float64)))
            self.delta_log_g.zero_()

    @torch.no_grad()
    def set_kinetic(self, a: float, b: float) -> None:
        """Restart the kinetic spectrum at 1/G~(p) = a p_hat^2 + b (a, b > 0)."""
        if self.spectrum != "kinetic":
            raise ConfigError("set_kinetic needs spectrum = \"kinetic\"")
        self.log_a0.fill_(math.log(a))
        self.log_b0.fill_(math.log(b))
        self.delta_log_a.zero_()
        self.delta_log_b.zero_()

    def log_propagator(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """log G~(p), shape lattice.shape, in FFT ordering and symmetric under p -> -p.

        With a ``modulation`` (``conditioning.KineticModulation``, kinetic spectrum) and fields x:
        1/G~(p; c) = a e^{da(c)} p_hat^2 + b e^{db(c)} at each field's couplings c, shape (n, *L)
        (n = 1 when the fields share one point)."""
        if self.spectrum == "kinetic":
            if self.modulation is not None and x is not None:
                shift = self.modulation(x)  # (n, 2) float64
                shape = (-1,) + (1,) * self.lattice.ndim
                log_a = (self.log_a0 + self.delta_log_a.double() + shift[:, 0]).reshape(shape)
                log_b = (self.log_b0 + self.delta_log_b.double() + shift[:, 1]).reshape(shape)
                return -torch.log(torch.exp(log_a) * self.p_hat2 + torch.exp(log_b))
            return -torch.log(self.a * self.p_hat2 + self.b)
        delta = 0.5 * (self.delta_log_g + reflect_momenta(self.delta_log_g, self.lattice.ndim))
        return self.log_g0 + delta

    @property
    def a(self) -> torch.Tensor:
        """Kinetic coefficient a of 1/G~(p) = a p_hat^2 + b."""
        return torch.exp(self.log_a0 + self.delta_log_a)

    @property
    def b(self) -> torch.Tensor:
        """Mass term b of 1/G~(p) = a p_hat^2 + b."""
        return torch.exp(self.log_b0 + self.delta_log_b)

    def _map(self, x: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        log_g = self.log_propagator(x).to(x.dtype)  # *L or (n, *L)
        y = apply_circulant(x, torch.exp(0.5 * sign * log_g), self.lattice)
        log_det = (0.5 * sign) * log_g.reshape(-1, self.lattice.volume).sum(-1)
        return y, log_det.expand(x.shape[0])

    def forward_and_log_det(self, z):
        return self._map(z, 1.0)

    def inverse_and_log_det(self, phi):
        return self._map(phi, -1.0)

    def extra_repr(self) -> str:
        return f"spectrum={self.spectrum!r}, learnable={self.learnable}"


class GlobalRescale(LatticeBijection):
    """phi = e^c z with one learnable number c; log|det| = V c. Z2 equivariant."""

    z2_equivariant = True

    def __init__(self, lattice: Lattice, scale: float = 1.0, learnable: bool = True):
        super().__init__(lattice)
        if not scale > 0:
            raise ConfigError(f"rescale.scale must be > 0, got {scale}")
        value = torch.tensor(math.log(scale))
        if learnable:
            self.log_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_scale", value)

    def _map(self, x, sign):
        self.check_input(x)
        c = sign * self.log_scale.to(x.dtype)
        return x * torch.exp(c), (c * x[0].numel()).expand(x.shape[0])

    def forward_and_log_det(self, z):
        return self._map(z, 1.0)

    def inverse_and_log_det(self, phi):
        return self._map(phi, -1.0)
