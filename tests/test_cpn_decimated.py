"""The complex Bingham distribution (bingham.py) and the decimated CP^{N-1} flow (decimated.py).

* the normaliser E_Haar[exp(z^+ A z)] against its closed forms and a Monte Carlo average, at
  distinct, nearly degenerate and exactly degenerate (N > 2d) eigenvalues;
* the exact sampler's mean of z^+ A z against d/dt log E_Haar[exp(t z^+ A z)] at t = 1, for both
  rejection branches (small and large A), 4 sigma;
* the model: log w = -S - log q depends on the odd sites only (the even sites are exact), and the
  partition function it estimates agrees with a plain Haar estimate (4 sigma);
* bad input: the link form and a 3-d lattice are one clear error.
The generic flow properties (round trips, log-det against autograd, invariances) run for it in
test_cpn_flow.py like for every model on unit vectors.
"""

from __future__ import annotations

import math

import pytest
import torch
from lattgen_cpn.bingham import log_haar_mgf, padded_eigvalsh, sample_bingham
from lattgen_cpn.flow import haar_vectors, sphere_log_volume

from lattgen import ConfigError, Lattice
from lattgen.registry import get_registry

pytestmark = pytest.mark.usefixtures("one_thread")
REG = get_registry()


def random_hermitian_rank(n: int, m: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, Y): A = scale Y Y^+ with Y (n, m) of unit columns, like beta N sum of m neighbour projectors."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn((n, m), generator=g, dtype=torch.complex128)
    y = y / torch.linalg.vector_norm(y, dim=0, keepdim=True)
    return scale * (y @ y.conj().T), y


def test_normaliser_closed_forms():
    l2 = torch.tensor([[3.0, -1.0], [0.2, -4.5]], dtype=torch.float64)
    ref2 = torch.log((torch.exp(l2[:, 0]) - torch.exp(l2[:, 1])) / (l2[:, 0] - l2[:, 1]))
    assert torch.allclose(log_haar_mgf(l2), ref2, rtol=1e-12, atol=0)
    lam = [5.0, 1.0, -2.0]
    ref3 = 2 * sum(math.exp(lam[j]) / math.prod(lam[j] - lam[i] for i in range(3) if i != j) for j in range(3))
    assert math.isclose(float(log_haar_mgf(torch.tensor(lam, dtype=torch.float64))), math.log(ref3), rel_tol=1e-12)
    # near degeneracy: the divided difference tends to the derivative, exp'(l) = e^l (N = 2)
    near = torch.tensor([1.5, 1.5 - 1e-9], dtype=torch.float64)
    assert math.isclose(float(log_haar_mgf(near)), 1.5 - 0.5e-9, rel_tol=1e-12)
    # all equal: E[exp(l |z|^2)] = e^l
    assert math.isclose(float(log_haar_mgf(torch.full((5,), 0.7, dtype=torch.float64))), 0.7, rel_tol=1e-12)


@pytest.mark.parametrize("n, m, scale", [(3, 4, 2.0), (6, 4, 3.0)])
def test_normaliser_against_monte_carlo(n, m, scale):
    a, y = random_hermitian_rank(n, m, scale, seed=n)
    evals = padded_eigvalsh(y, scale)
    assert torch.allclose(evals.sort().values, torch.linalg.eigvalsh(a), rtol=0, atol=1e-12 * scale * m)
    z = haar_vectors(400_000, (), n, generator=torch.Generator().manual_seed(1))
    f = torch.exp(((z.conj() @ a) * z).sum(-1).real)
    mean, err = float(f.mean()), float(f.std() / math.sqrt(f.numel()))
    assert abs(mean - math.exp(float(log_haar_mgf(evals)))) < 4 * err, (mean, err)


@pytest.mark.parametrize("n, m, scale", [(2, 4, 0.3), (3, 4, 0.3), (3, 4, 25.0), (6, 4, 1.0), (6, 4, 30.0)])
def test_sampler_mean_energy(n, m, scale):
    a, _ = random_hermitian_rank(n, m, scale, seed=10 + n)
    z = sample_bingham(a.expand(100_000, n, n), torch.Generator().manual_seed(2))
    assert torch.allclose(torch.linalg.vector_norm(z, dim=-1), torch.ones((), dtype=torch.float64), rtol=0, atol=1e-13)
    e = ((z.conj() @ a) * z).sum(-1).real
    t = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    log_haar_mgf(torch.linalg.eigvalsh(t * a)).backward()  # d/dt log E[exp(t E)] = <E>_t
    err = float(e.std() / math.sqrt(e.numel()))
    assert abs(float(e.mean()) - float(t.grad)) < 4 * err, (float(e.mean()), float(t.grad), err)
    # the second moment too: d^2/dt^2 log E[exp(tE)] = var E
    var_ref = torch.autograd.functional.hessian(lambda s: log_haar_mgf(torch.linalg.eigvalsh(s * a)),
                                                torch.tensor(1.0, dtype=torch.float64))
    # a direction that is no eigenvector: E|u^+ z|^2 = d/dt log E[exp(z^+ (A + t u u^+) z)] at t = 0, and
    # E[(u^+ z)^2] = 0 (uniform phases in the eigenbasis)
    u = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.complex128)
    u = u / torch.linalg.vector_norm(u)
    c = z @ u.conj()
    t0 = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    log_haar_mgf(torch.linalg.eigvalsh(a + t0 * torch.outer(u, u.conj()))).backward()
    w = c.abs() ** 2
    assert abs(float(w.mean()) - float(t0.grad)) < 4 * float(w.std()) / math.sqrt(w.numel())
    sq = c**2
    assert abs(complex(sq.mean())) < 4 * float(sq.abs().std()) / math.sqrt(sq.numel())
    d = e - e.mean()
    var, m4 = float((d**2).mean()), float((d**4).mean())
    assert abs(var - float(var_ref)) < 4 * math.sqrt((m4 - var**2) / e.numel()), (var, float(var_ref))


def model_for(shape, n_comp, beta, seed=None, **params):
    action = REG.get("action", "cpn").build(Lattice(shape), params={"N": n_comp, "beta": beta})
    model = REG.get("model", "cpn_decimated").build(action, params={"n_layers": 4, "hidden": [8], **params}).double()
    if seed is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return action, model


@pytest.mark.parametrize("shape, n_comp", [((4, 4), 3), ((6, 4), 6)])
def test_log_weight_depends_on_the_odd_sites_only(shape, n_comp):
    action, model = model_for(shape, n_comp, 0.9, seed=3)
    g = torch.Generator().manual_seed(4)
    phi, log_q = model.sample(6, g)
    log_w = -action.action(phi) - log_q
    other = phi.clone()
    other[:, model.even] = haar_vectors(6, shape, n_comp, generator=g)[:, model.even]
    log_w_other = -action.action(other) - model.log_prob(other)
    scale = 1e-12 * (1 + log_w.abs())
    assert ((log_w - log_w_other).abs() < 100 * scale).all(), (log_w, log_w_other)
    assert not torch.allclose(action.action(phi), action.action(other))  # the even sites did change


def test_partition_function_agrees_with_haar_estimate():
    """Z = E_q[exp(-S)/q] with the zero-weight model (Haar odd sites, exact even ones) and E_Haar[exp(-S)] Vol^V."""
    shape, n_comp = (4, 4), 3
    action, model = model_for(shape, n_comp, 0.25)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        phi, log_q = model.sample(20_000, g)
    log_vol = 16 * sphere_log_volume(n_comp)
    w_dec = torch.exp(-action.action(phi) - log_q - log_vol)  # Z / Vol^V
    z = haar_vectors(200_000, shape, n_comp, generator=g)
    w_haar = torch.exp(-action.action(z))
    m1, e1 = float(w_dec.mean()), float(w_dec.std() / math.sqrt(w_dec.numel()))
    m2, e2 = float(w_haar.mean()), float(w_haar.std() / math.sqrt(w_haar.numel()))
    assert w_dec.std() < w_haar.std()  # Rao-Blackwell: the exact even sites remove variance
    assert abs(m1 - m2) < 4 * math.hypot(e1, e2), (m1, e1, m2, e2)


def test_bad_input():
    lat = Lattice((4, 4))
    link = REG.get("action", "cpn").build(lat, params={"N": 3, "beta": 0.5, "form": "link"})
    with pytest.raises(ConfigError, match="quartic"):
        REG.get("model", "cpn_decimated").build(link)
    cube = REG.get("action", "cpn").build(Lattice((4, 4, 4)), params={"N": 3, "beta": 0.5})
    with pytest.raises(ConfigError, match="two-dimensional"):
        REG.get("model", "cpn_decimated").build(cube)
