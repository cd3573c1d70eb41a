"""Field spaces: what one configuration of a theory is (shape, dtype, manifold).

A theory plugin's action declares its ``field_space``; the core's samplers, ``run_chain``,
IMH, checkpoints and the harness ask it for shapes, start configurations, the wrap back onto the
manifold and validation of loaded fields, and so work on any of them:

| space          | one configuration          | manifold        | for example           |
|----------------|----------------------------|-----------------|-----------------------|
| ``RealField``  | ``(*lattice)`` real        | real line       | phi^4                 |
| ``LinkAngles`` | ``(d, *lattice)`` real     | circle (-pi, pi] | compact U(1) gauge    |
| ``UnitVectors``| ``(*lattice, N)`` complex  | sphere S^{2N-1} | CP^{N-1} sigma models |

A batch of fields has shape ``(batch, *space.shape)``. ``Lattice`` stays geometry only.
"""

from __future__ import annotations

import math

import torch

from .errors import LatticeError
from .lattice import Lattice

TWO_PI = 2.0 * math.pi
#: the run's floating-point types by their config name ([run] dtype, [train] dtype)
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """theta mapped into (-pi, pi] (the same point on the circle): pi - ((pi - theta) mod 2 pi)."""
    return math.pi - torch.remainder(math.pi - theta, TWO_PI)


class FieldSpace:
    """One configuration's shape, element type and manifold on a lattice; real line by default.

    ``shape``: per-configuration tensor shape; ``lattice_axes``: the axes of ``shape`` that run
    over the lattice (translations act there); ``complex``: elements are complex numbers (the
    run's float dtype picks the matching complex dtype); ``manifold``: a short name shown to users
    and matched by observables registered for it (``register(..., field="real")``).
    """

    #: the manifold's name (observables registered with ``field=<name>`` apply to this space)
    manifold: str = "real"
    complex: bool = False

    def __init__(self, lattice: Lattice, shape: tuple[int, ...], lattice_axes: tuple[int, ...]):
        self.lattice = lattice
        self.shape = tuple(int(s) for s in shape)
        self.lattice_axes = tuple(lattice_axes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={list(self.shape)}, manifold={self.manifold!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.shape == self.shape  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.shape))

    # -- sizes and types ---------------------------------------------------------------------
    @property
    def numel(self) -> int:
        """Numbers (complex ones counted once) in one configuration."""
        return math.prod(self.shape)

    @property
    def batch_dims(self) -> tuple[int, ...]:
        """Tensor dims of one configuration in a batch (batch, *shape): reduce over these."""
        return tuple(range(1, len(self.shape) + 1))

    def dtype(self, real_dtype: torch.dtype) -> torch.dtype:
        """The element dtype for a run in ``real_dtype`` (float64 -> complex128 for complex spaces)."""
        if not self.complex:
            return real_dtype
        return torch.complex128 if real_dtype == torch.float64 else torch.complex64

    # -- configurations ------------------------------------------------------------------------
    def cold(self, n: int, *, device=None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """n ordered configurations (a cold start): zeros on the real line and the circle."""
        return torch.zeros((n, *self.shape), device=device, dtype=self.dtype(dtype))

    def random(self, n: int, *, generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """n disordered configurations (a hot start): i.i.d. N(0, 1) on the real line."""
        return torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype(dtype))

    def project(self, phi: torch.Tensor) -> torch.Tensor:
        """The same configuration in canonical form (angles wrapped, vectors normalised)."""
        return phi

    def check(self, phi: torch.Tensor, what: str = "field") -> None:
        """Raise LatticeError unless ``phi`` is a batch of valid configurations of this space."""
        if tuple(phi.shape[1:]) != self.shape:
            raise LatticeError(
                f"{what} of shape {tuple(phi.shape)} does not fit {self!r} on lattice "
                f"{list(self.lattice.shape)}: expected (batch, {', '.join(map(str, self.shape))})")
        if phi.is_complex() != self.complex:
            raise LatticeError(f"{what} is {'complex' if phi.is_complex() else 'real'} but {self!r} "
                               f"holds {'complex' if self.complex else 'real'} numbers")
        bad = ~torch.isfinite(phi)
        if bool(bad.any()):
            raise LatticeError(f"{what} holds {int(bad.sum())} non-finite values (NaN or inf)")
        self.check_values(phi, what)

    def check_values(self, phi: torch.Tensor, what: str) -> None:
        """Manifold-specific value checks (finite values are already checked)."""

    # -- symmetry moves -----------------------------------------------------------------------
    def translate(self, phi: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Each configuration of the batch moved by its own lattice vector ``shifts[b]`` (periodic).

        phi' (x) = phi(x + shift), one gather: shifts is an integer tensor (batch, d).
        """
        lat = self.lattice
        n = phi.shape[0]
        extents = torch.tensor(lat.shape, device=phi.device)
        coords = lat.coordinates(phi.device).reshape(-1, lat.ndim)
        src = (coords[None] + shifts[:, None, :]) % extents  # (batch, V, d)
        strides = [1] * lat.ndim
        for mu in range(lat.ndim - 2, -1, -1):
            strides[mu] = strides[mu + 1] * lat.shape[mu + 1]
        index = (src * torch.tensor(strides, device=phi.device)).sum(-1)  # (batch, V)
        # move the lattice axes last and flat, gather, move back
        axes = [a + 1 for a in self.lattice_axes]
        rest = [a for a in range(1, phi.dim()) if a not in axes]
        x = phi.permute(0, *rest, *axes)
        inner = x.shape[1:1 + len(rest)]
        x = x.reshape(n, -1, lat.volume)
        x = x.gather(2, index[:, None, :].expand(n, x.shape[1], lat.volume))
        x = x.reshape(n, *inner, *lat.shape)
        inverse = [0] * phi.dim()
        for pos, a in enumerate([0, *rest, *axes]):
            inverse[a] = pos
        return x.permute(*inverse)


class RealField(FieldSpace):
    """One real number per site, shape ``(*lattice)`` (scalar field theories such as phi^4)."""

    manifold = "real"

    def __init__(self, lattice: Lattice):
        super().__init__(lattice, lattice.shape, tuple(range(lattice.ndim)))


class LinkAngles(FieldSpace):
    """One angle in (-pi, pi] per link, shape ``(d, *lattice)``: theta_mu(x) of U_mu(x) = exp(i theta).

    Cold start: every link 0 (U = 1); hot start: uniform angles (the Haar measure of U(1)).
    """

    manifold = "circle"

    def __init__(self, lattice: Lattice):
        super().__init__(lattice, (lattice.ndim, *lattice.shape), tuple(range(1, lattice.ndim + 1)))

    def random(self, n, *, generator=None, device=None, dtype=torch.float64):
        u = torch.rand((n, *self.shape), generator=generator, device=device, dtype=dtype)
        return wrap_angle(math.pi - TWO_PI * u)  # uniform on (-pi, pi]

    def project(self, phi):
        return wrap_angle(phi)

    def check_values(self, phi, what):
        out = (phi <= -math.pi) | (phi > math.pi)
        if bool(out.any()):
            worst = float(phi[out].abs().max())
            raise LatticeError(f"{what} holds {int(out.sum())} angles outside (-pi, pi] (|theta| up to "
                               f"{worst:.6g}); link angles must be wrapped into (-pi, pi]")


class UnitVectors(FieldSpace):
    """A complex unit N-vector per site, shape ``(*lattice, N)`` (sigma models: CP^{N-1}, O(3) via CP^1).

    Cold start: every z = (1, 0, ..., 0); hot start: uniform on S^{2N-1} (normalised Gaussians).
    ``tolerance`` is the |z^dagger z - 1| a loaded configuration may have (rounding of the writer).
    """

    manifold = "sphere"
    complex = True

    def __init__(self, lattice: Lattice, n: int, tolerance: float = 1e-6):
        if int(n) < 1:
            raise LatticeError(f"unit vectors need N >= 1 components, got {n}")
        super().__init__(lattice, (*lattice.shape, int(n)), tuple(range(lattice.ndim)))
        self.n = int(n)
        self.tolerance = float(tolerance)

    def cold(self, n, *, device=None, dtype=torch.float64):
        z = torch.zeros((n, *self.shape), device=device, dtype=self.dtype(dtype))
        z[..., 0] = 1.0
        return z

    def random(self, n, *, generator=None, device=None, dtype=torch.float64):
        z = torch.randn((n, *self.shape), generator=generator, device=device, dtype=self.dtype(dtype))
        return self.project(z)

    def project(self, phi):
        return phi / torch.linalg.vector_norm(phi, dim=-1, keepdim=True)

    def check_values(self, phi, what):
        norm2 = (phi.real**2 + phi.imag**2).sum(-1) if phi.is_complex() else (phi**2).sum(-1)
        dev = (norm2 - 1).abs()
        if bool((dev > self.tolerance).any()):
            raise LatticeError(f"{what} holds {int((dev > self.tolerance).sum())} vectors that are not of unit "
                               f"length (|z^dagger z - 1| up to {float(dev.max()):.3g} > {self.tolerance:g})")
