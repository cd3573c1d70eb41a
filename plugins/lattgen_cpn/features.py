"""Gauge- and U(N)-invariant inputs of the CP^{N-1} couplings' conditioners, from the frozen colour only.

Per site: the eigenvalues of the neighbours' projector field M_x at the updated sites (zero at
frozen ones) and |z_y^+ z_{y+mu+-nu}|^2 between frozen diagonal neighbours (zero at updated
ones); a periodic CNN maps them to the coupling's parameters at the updated sites.
"""

from __future__ import annotations

import torch

from .geometry import abs2, at_offset, overlap


def neighbour_offsets(ndim: int) -> list[tuple[int, ...]]:
    """The 2d nearest-neighbour offsets +-mu_hat, in the order (+0, -0, +1, -1, ...)."""
    out = []
    for mu in range(ndim):
        for n in (1, -1):
            out.append(tuple(n if d == mu else 0 for d in range(ndim)))
    return out


def diagonal_offsets(ndim: int) -> list[tuple[int, ...]]:
    """The offsets mu_hat + nu_hat and mu_hat - nu_hat (mu < nu): one of each pair of frozen diagonal neighbours."""
    out = []
    for mu in range(ndim):
        for nu in range(mu + 1, ndim):
            for sign in (1, -1):
                out.append(tuple(1 if d == mu else sign if d == nu else 0 for d in range(ndim)))
    return out


def invariant_features(net: torch.nn.Module, z: torch.Tensor, mask: torch.Tensor, evals: torch.Tensor,
                       pair_offsets=None, frozen: torch.Tensor | None = None) -> torch.Tensor:
    """net(features) at the updated sites of ``mask``: (batch, S, channels) in float64.

    ``evals``: (batch, S, n) eigenvalues at those sites (any real dtype); the net runs in z's real
    precision (float32 for complex64 fields). ``pair_offsets`` (default ``diagonal_offsets``) and
    ``frozen`` (default: not ``mask``): the overlaps |z_y^+ z_{y+a}|^2 placed at the frozen sites y.
    """
    ndim = mask.dim()
    lat_dims = tuple(range(1, ndim + 1))
    real = torch.float32 if z.dtype == torch.complex64 else torch.float64
    eig_map = torch.zeros((*z.shape[:-1], evals.shape[-1]), dtype=real, device=z.device)
    eig_map[:, mask] = evals.to(real)
    feats = [eig_map]
    frozen = (~mask if frozen is None else frozen).to(real)
    for off in (diagonal_offsets(ndim) if pair_offsets is None else pair_offsets):
        feats.append((abs2(overlap(z, at_offset(z, off))) * frozen).unsqueeze(-1).to(real))
    x = torch.cat(feats, dim=-1).permute(0, ndim + 1, *lat_dims)  # (batch, C, *lattice)
    return net(x).permute(0, *[d + 1 for d in lat_dims], 1)[:, mask].to(torch.float64)
