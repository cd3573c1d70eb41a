"""Lattice geometry: shifts, checkerboards and momenta in any dimension."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lattgen import Lattice, LatticeError

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

shapes = st.lists(st.integers(2, 6), min_size=1, max_size=4)


@given(shape=shapes, mu=st.integers(0, 3), n=st.integers(-7, 7))
def test_shift_moves_sites(shape, mu, n):
    lat = Lattice(shape)
    mu = mu % lat.ndim
    phi = torch.arange(lat.volume, dtype=torch.float64).reshape(1, *shape)
    shifted = lat.shift(phi, mu, n)
    x = [0] * lat.ndim
    y = list(x)
    y[mu] = n % shape[mu]
    assert shifted[(0, *x)] == phi[(0, *y)]
    assert torch.equal(lat.shift(shifted, mu, -n), phi)


@given(shape=st.lists(st.sampled_from([2, 4, 6]), min_size=1, max_size=3))
def test_checkerboard_partitions_and_neighbours_differ(shape):
    lat = Lattice(shape)
    even, odd = lat.checkerboard(0), lat.checkerboard(1)
    assert torch.equal(even + odd, torch.ones(shape))
    assert even.sum() == lat.volume // 2
    for mu in range(lat.ndim):
        assert torch.equal(lat.shift(even[None], mu)[0], odd)


def test_checkerboard_needs_even_extents():
    with pytest.raises(LatticeError, match="even"):
        Lattice([4, 5]).checkerboard()


@given(shape=shapes)
def test_momenta_are_fft_frequencies(shape):
    lat = Lattice(shape)
    p = lat.momenta()
    assert p.shape == (*shape, lat.ndim)
    assert torch.all(p[(0,) * lat.ndim] == 0)
    # the Laplacian's eigenvalues: FFT of the nearest-neighbour stencil
    delta = torch.zeros(shape, dtype=torch.float64)
    delta[(0,) * lat.ndim] = 2 * lat.ndim
    for mu in range(lat.ndim):
        idx = [0] * lat.ndim
        idx[mu] = 1
        delta[tuple(idx)] -= 1
        idx[mu] = -1
        delta[tuple(idx)] -= 1
    eig = torch.fft.fftn(delta).real
    assert torch.allclose(eig, lat.p_hat_squared(), atol=1e-12)
    assert lat.volume == math.prod(shape)


@pytest.mark.parametrize("bad", [[], [1, 4], [4, 0], "8", [None]])
def test_bad_shapes(bad):
    with pytest.raises(LatticeError):
        Lattice(bad)


def test_check_field():
    with pytest.raises(LatticeError, match="expected"):
        Lattice([4, 4]).check_field(torch.zeros(2, 4, 5))
