"""Observables: exact free-field values within 4 sigma (d = 2, 3, non-square), hand-computed tiny
examples, lattice-symmetry invariance of the primaries, the shared-FFT cache, registration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lattgen import Lattice, LatticeError
from lattgen.analysis import analyse_chain
from lattgen.build import build_observables as build_registered
from lattgen.fourier import sample_gaussian_field
from lattgen.observable import measure_all
from lattgen_observables.scalar_field import OBSERVABLES, gaussian_exact
from lattgen.sampler import Chain

pytestmark = pytest.mark.numerical  # also run under ATEN_CPU_CAPABILITY=default by .ci/run

NAMES = sorted(OBSERVABLES)


def build_observables(lattice, names=None):
    """The scalar-field observables (default: every one of this plugin; other plugins register
    observables for other field spaces, e.g. link angles)."""
    return build_registered(lattice, NAMES if names is None else names)


def free_propagator(lattice: Lattice, beta: float) -> torch.Tensor:
    """G~(p) = 1 / (2 - 2 beta sum_mu cos p_mu) (form B at lam = 0, docs/physics.md "Free field")."""
    return 1.0 / (2.0 - 2.0 * beta * lattice.cos_sum(dtype=torch.float64))


def brute_force_two_point(prop: np.ndarray) -> np.ndarray:
    """G(x) = (1/V) sum_p cos(p.x) G~(p) by an explicit V x V sum (no FFT), shape like prop."""
    shape = prop.shape
    coords = np.indices(shape).reshape(len(shape), -1).T
    momenta = 2 * np.pi * coords / np.array(shape)
    phase = np.cos(coords @ momenta.T)  # (x, p)
    return (phase @ prop.reshape(-1) / prop.size).reshape(shape)


def independent_exact(lattice: Lattice, beta: float, index_values: dict) -> dict[str, np.ndarray]:
    """Free-field expectations from textbook formulas, indexed like the observables."""
    prop = free_propagator(lattice, beta).numpy()
    g_x = brute_force_two_point(prop)
    d, volume, extent_t = lattice.ndim, lattice.volume, lattice.shape[0]
    chi = 1.0 / (2.0 - 2.0 * beta * d)
    unit = [tuple(int(mu == nu) for nu in range(d)) for mu in range(d)]
    longest = max(lattice.shape)
    g1 = np.mean([prop[unit[mu]] for mu in range(d) if lattice.shape[mu] == longest])
    c_t = np.array([g_x[t].sum() for t in range(extent_t // 2 + 1)])
    return {
        "magnetisation": np.array([0.0]),
        "magnetisation_sign": np.array([0.0]),  # Z2 symmetry
        "abs_magnetisation": np.array([math.sqrt(2 * chi / (math.pi * volume))]),
        "susceptibility": np.array([chi]),
        "binder_cumulant": np.array([0.0]),  # Gaussian m: <m^4> = 3 <m^2>^2
        "correlation_length": np.array(
            [math.sqrt((chi / g1 - 1) / (4 * math.sin(math.pi / longest) ** 2))]
        ),
        "two_point": np.array([g_x[tuple(x)] for x in index_values["two_point"]]),
        "propagator_momentum": np.array(
            [prop[tuple(n)] for n in index_values["propagator_momentum"]]
        ),
        "zero_momentum_correlator": c_t,
        # zero spatial momentum: a single pole, C(t) ~ cosh(E (t - T/2)) with cosh E = (1 - beta (d-1))/beta
        "effective_mass": np.full(extent_t // 2, math.acosh((1 - beta * (d - 1)) / beta)),
        "ising_energy": np.array([np.mean([g_x[u] for u in unit])]),
    }


FREE_CASES = [((8, 6), 0.47), ((6, 10), 0.47), ((4, 6, 6), 0.31), ((6, 4, 4), 0.31)]


@pytest.fixture(scope="module", params=FREE_CASES, ids=lambda c: "x".join(map(str, c[0])))
def free_field_run(request):
    """Exact iid free-field samples measured by every registered observable, then analysed."""
    shape, beta = request.param
    lattice = Lattice(shape)
    observables = build_observables(lattice)
    n_steps, n_chains = 1000, 4
    gen = torch.Generator().manual_seed(sum(shape))
    phi = sample_gaussian_field(free_propagator(lattice, beta), lattice, n_steps * n_chains, gen)
    measured = measure_all(observables)(phi)
    primaries = {k: v.reshape(n_steps, n_chains, -1).numpy() for k, v in measured.items()}
    chain = Chain(primaries, np.ones((n_steps, n_chains)), n_chains, 0.0, 0.0)
    return lattice, beta, observables, analyse_chain(chain, observables)


@pytest.mark.parametrize("name", NAMES)
def test_free_field_matches_exact_within_4_sigma(free_field_run, name):
    lattice, beta, observables, results = free_field_run
    index_values = {k: getattr(o, "index_values", ()) for k, o in observables.items()}
    exact = independent_exact(lattice, beta, index_values)[name]
    res = results[name]
    value, error = np.atleast_1d(res["value"]), np.atleast_1d(res["error"])
    assert value.shape == exact.shape
    assert np.all(np.isfinite(value)) and np.all(error > 0)
    assert np.all(np.abs(value - exact) <= 4 * error), (value - exact) / error
    tau = np.atleast_1d(res["tau_int"])  # iid samples
    assert np.all(np.abs(tau - 0.5) <= 4 * np.atleast_1d(res["tau_int_error"]))


@pytest.mark.parametrize("shape,beta", FREE_CASES)
def test_gaussian_exact_agrees_with_textbook_formulas(shape, beta):
    lattice = Lattice(shape)
    observables = build_observables(lattice)
    index_values = {k: getattr(o, "index_values", ()) for k, o in observables.items()}
    ours = gaussian_exact(lattice, free_propagator(lattice, beta))
    reference = independent_exact(lattice, beta, index_values)
    assert set(ours) == set(NAMES)
    for name in NAMES:
        np.testing.assert_allclose(
            ours[name], reference[name], rtol=1e-10, atol=1e-13, err_msg=name
        )


def test_derived_values_of_exact_means_are_exact():
    """derive() applied to exact primary means reproduces the exact observables (no sampling)."""
    lattice, beta = Lattice([6, 8]), 0.45
    observables = build_observables(lattice)
    exact = gaussian_exact(lattice, free_propagator(lattice, beta))
    chi = exact["susceptibility"][0]
    prop_orbits = exact["propagator_momentum"]
    means = {
        "two_point": prop_orbits,
        "propagator_momentum": prop_orbits,
        "zero_momentum_correlator": exact["zero_momentum_correlator"],
        "effective_mass": exact["zero_momentum_correlator"],
        "binder_cumulant": np.array([chi / lattice.volume, 3 * (chi / lattice.volume) ** 2]),
        "susceptibility": np.array([chi]),
    }
    for name, m in means.items():
        np.testing.assert_allclose(
            observables[name].value(m), exact[name], rtol=1e-12, atol=1e-14, err_msg=name
        )


# -- hand-computed tiny examples -----------------------------------------------------------------
def _primaries(lattice: Lattice, phi: torch.Tensor) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in measure_all(build_observables(lattice))(phi).items()}


def test_hand_computed_2x2():
    """phi = [[1, 2], [3, 4]]: m = 5/2; phi~ = 10, -4 (p = (pi, 0)), -2 (p = (0, pi)), 0."""
    lattice = Lattice([2, 2])
    p = _primaries(lattice, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=torch.float64))
    assert p["magnetisation"][0].tolist() == [2.5]
    assert p["abs_magnetisation"][0].tolist() == [2.5]
    assert p["susceptibility"][0].tolist() == [25.0]  # V m^2
    assert p["binder_cumulant"][0].tolist() == [6.25, 39.0625]  # m^2, m^4
    # |phi~(p)|^2 / V on the orbits (0,0), {(1,0),(0,1)}, (1,1)
    np.testing.assert_allclose(p["propagator_momentum"][0], [25.0, (16 + 4) / 8, 0.0])
    np.testing.assert_allclose(p["two_point"][0], p["propagator_momentum"][0])  # same primaries
    np.testing.assert_allclose(p["correlation_length"][0], [25.0, 2.5])  # G~(0), G~(p1) averaged
    # links along axis 0: 1*3 + 2*4 + 3*1 + 4*2 = 22, axis 1: 1*2 + 2*1 + 3*4 + 4*3 = 28
    np.testing.assert_allclose(p["ising_energy"][0], [(22 / 4 + 28 / 4) / 2])
    # time-slice sums S = (3, 7): C(0) = (9 + 49)/4, C(1) = 2 * 21 / 4
    np.testing.assert_allclose(p["zero_momentum_correlator"][0], [14.5, 10.5])
    # G(x) from the orbit-averaged G~: G(0,0) = <phi^2> = 7.5, G(1,1) = (4 + 6 + 6 + 4)/4 = 5
    observables = build_observables(lattice)
    np.testing.assert_allclose(
        observables["two_point"].value(p["two_point"][0]), [7.5, (5.5 + 7) / 2, 5.0]
    )


def test_hand_computed_one_dimension_odd_extent():
    """phi = (1, 2, 4) on a ring of 3 sites."""
    lattice = Lattice([3])
    p = _primaries(lattice, torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64))
    np.testing.assert_allclose(p["magnetisation"][0], [7 / 3])
    np.testing.assert_allclose(p["ising_energy"][0], [(2 + 8 + 4) / 3])
    np.testing.assert_allclose(
        p["zero_momentum_correlator"][0], [(1 + 4 + 16) / 3, (2 + 8 + 4) / 3]
    )
    # |phi~(2 pi/3)|^2 = |1 + 2 w + 4 w^2|^2 with w = exp(-2 pi i/3): 21 - 14 = 7
    np.testing.assert_allclose(p["propagator_momentum"][0], [49 / 3, 7 / 3])


def test_effective_mass_of_a_cosh():
    lattice = Lattice([10, 2])
    obs = build_observables(lattice, ["effective_mass"])["effective_mass"]
    c = np.cosh(0.3 * (np.arange(6) - 5))
    np.testing.assert_allclose(obs.value(c), np.full(5, 0.3), rtol=1e-12)
    assert np.isnan(
        obs.value(np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0]))[0]
    )  # arccosh(<1): NaN, no error


# -- symmetry invariance ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6, 6), (5, 5), (6, 4)])
def test_primaries_are_invariant_under_lattice_symmetries(shape):
    lattice = Lattice(shape)
    observables = build_observables(lattice)
    gen = torch.Generator().manual_seed(1)
    phi = torch.randn((3, *shape), generator=gen, dtype=torch.float64)
    base = {k: o.primaries(phi) for k, o in observables.items()}
    moved = [torch.roll(phi, shifts=(1, 2), dims=(1, lattice.ndim))]
    moved += [torch.flip(phi, dims=(1 + mu,)) for mu in range(lattice.ndim)]
    swaps = [
        (a, b)
        for a in range(lattice.ndim)
        for b in range(a + 1, lattice.ndim)
        if shape[a] == shape[b]
    ]
    for a, b in swaps:
        moved.append(phi.transpose(1 + a, 1 + b).contiguous())
    for k, o in observables.items():
        along_time = k in ("zero_momentum_correlator", "effective_mass")
        for i, other in enumerate(moved):
            if along_time and i > lattice.ndim and 0 in swaps[i - lattice.ndim - 1]:
                continue  # C(t) singles out axis 0: a swap with axis 0 is not a symmetry of it
            torch.testing.assert_close(o.primaries(other), base[k], rtol=1e-12, atol=1e-12, msg=k)


# -- types, devices, shapes, errors ----------------------------------------------------------------
def test_primaries_shapes_dtypes_and_index():
    lattice = Lattice([6, 4])
    observables = build_observables(lattice)
    phi = torch.randn(5, 6, 4, dtype=torch.float32)
    expected_k = {
        "magnetisation": 1,
        "magnetisation_sign": 1,
        "abs_magnetisation": 1,
        "susceptibility": 1,
        "binder_cumulant": 2,
        "correlation_length": 2,
        "ising_energy": 1,
        "zero_momentum_correlator": 4,
        "effective_mass": 4,
        "two_point": 12,
        "propagator_momentum": 12,
    }
    for name, obs in observables.items():
        out = obs.primaries(phi)
        assert out.dtype == torch.float64 and out.device == phi.device
        assert out.shape == (5, expected_k[name]), name
        values = getattr(obs, "index_values", ())
        if obs.index:
            assert len(obs.value(out.mean(0).numpy())) == len(values)
    assert build_observables(lattice)["two_point"].index_values[:3] == ((0, 0), (0, 1), (0, 2))
    assert build_observables(Lattice([4, 4]))["two_point"].index_values == (
        (0, 0),
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (2, 2),
    )


def test_wrong_field_shape_is_a_lattice_error():
    obs = build_observables(Lattice([4, 4]), ["susceptibility"])["susceptibility"]
    with pytest.raises(LatticeError, match="does not fit"):
        obs.primaries(torch.zeros(3, 4, 5))


def test_gradients_are_not_tracked():
    phi = torch.randn(2, 4, 4, requires_grad=True)
    out = build_observables(Lattice([4, 4]), ["two_point"])["two_point"].primaries(phi)
    assert not out.requires_grad


# -- the shared FFT ---------------------------------------------------------------------------------
def test_shared_features_never_serve_stale_values():
    lattice = Lattice([4, 4])
    measure = measure_all(build_observables(lattice))
    phi = torch.randn(3, 4, 4, dtype=torch.float64)
    first = measure(phi)
    phi.data.mul_(2.0)  # an in-place change the autograd version counter does not see
    second = measure(phi)
    for k in first:
        scale = 2.0 if k in ("magnetisation", "abs_magnetisation") else 1.0 if k == "magnetisation_sign" else 4.0
        if k == "binder_cumulant":
            torch.testing.assert_close(
                second[k], first[k] * torch.tensor([4.0, 16.0], dtype=torch.float64)
            )
        else:
            torch.testing.assert_close(second[k], first[k] * scale, msg=k)
    other = torch.randn(3, 4, 4, dtype=torch.float64)
    fresh = build_observables(lattice)
    for k, v in measure(other).items():
        torch.testing.assert_close(v, fresh[k].primaries(other.clone()), msg=k)


def test_inference_mode_tensors_work():
    lattice = Lattice([4, 4])
    with torch.inference_mode():
        phi = torch.randn(2, 4, 4)
    out = measure_all(build_observables(lattice))(phi)
    assert out["susceptibility"].shape == (2, 1)


# -- registration ---------------------------------------------------------------------------------
def test_plugin_registers_every_observable(registry):
    assert set(NAMES) <= set(registry.names("observable"))
    for name in NAMES:
        spec = registry.get("observable", name)
        assert spec.plugin == "observables" and spec.doc
        assert spec.build(Lattice([4, 6])).name == name


def test_sign_flips_count_the_changes_of_sign_along_each_chain():
    from lattgen_observables.scalar_field import sign_flip_statistics

    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, 1], [1, 1]], dtype=float)[..., None]  # (steps, chains, 1)
    stats = sign_flip_statistics(signs)
    assert stats == {"sign_flips": 4.0, "flips_per_step": 0.5, "min_flips_per_chain": 2.0, "chains_without_flip": 0.0}
    assert sign_flip_statistics(np.ones((6, 3, 1)))["chains_without_flip"] == 3.0
