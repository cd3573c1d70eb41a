"""Conditional (amortised) flows: exact densities at per-configuration couplings, fixed points,
training over a range, the run directory's range and the errors of points it cannot serve."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from lattgen_flows.conditioning import CouplingScale
from lattgen_flows.zero_mode import ZeroModeSpline
from rounding import assert_close_to_rounding, scalar_condition

from lattgen import ConditionalModel, ConfigError, LattgenWarning, standard_normal_log_prob
from lattgen.build import build_action, build_model
from lattgen.objectives import reverse_kl_objective
from lattgen.registry import get_registry

REG = get_registry()
NAMES = ("conditional_equivariant", "conditional_multigrid")
RANGE = {"beta": [0.3, 0.45], "lam": [0.4, 0.8]}


def model_for(name: str, shape=(4, 4), seed: int = 0, couplings=RANGE, scale: float = 0.05):
    action = build_action({"name": "phi4", "lattice": list(shape), "beta": 0.4, "lam": 0.5}, REG)
    torch.manual_seed(seed)
    model = build_model({"name": name, "couplings": couplings, "hidden": [4]}, action, REG).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial weights: the zero-initialised couplings are the identity
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return action, model


@pytest.mark.numerical
@pytest.mark.parametrize("name", NAMES)
def test_log_q_at_per_configuration_couplings_matches_the_autograd_jacobian(name):
    """log q(phi | c_i) = log r(z) + log|det dz/dphi| with the dense autograd Jacobian of the
    inverse at each configuration's own couplings; sample_at and log_prob_at agree."""
    _, model = model_for(name)
    assert isinstance(model, ConditionalModel)
    g = torch.Generator().manual_seed(3)
    c = model.draw_couplings(3, g)
    with torch.no_grad():
        phi, log_q = model.sample_at(c, g)
        again = model.log_prob_at(phi, c)
    assert_close_to_rounding(again, log_q, scalar_condition(lambda x: model.log_prob_at(x, c), phi), "log_prob_at")
    for i in range(3):
        ci = {k: v[i:i + 1] for k, v in c.items()}
        x = phi[i]
        with model.context.using(model.normalised(ci, torch.float64)):
            z = model.flow.inverse_and_log_det(x.unsqueeze(0))[0]
            jac = torch.autograd.functional.jacobian(lambda y: model.flow.inverse_and_log_det(y.unsqueeze(0))[0][0], x)
        want = standard_normal_log_prob(z) + torch.linalg.slogdet(jac.reshape(x.numel(), -1))[1]
        assert torch.allclose(log_q[i:i + 1], want, rtol=1e-8, atol=1e-8 * x.numel()), name
    # the couplings matter: another beta gives another density for the same field
    other = {**c, "beta": c["beta"] + 0.05}
    assert not torch.allclose(model.log_prob_at(phi, other), log_q)


@pytest.mark.numerical
def test_at_a_fixed_point_it_is_the_flow_with_the_coupling_channels_folded_in():
    """With zero weights on the coupling channels, CouplingScale, the ZeroModeSpline and the
    free-field layer's KineticModulation at their start (zero: the identity), the conditional equivariant flow is exactly the
    ``equivariant`` flow with the same other weights."""
    action = build_action({"name": "phi4", "lattice": [4, 4], "beta": 0.4, "lam": 0.5}, REG)
    plain = build_model({"name": "equivariant", "hidden": [4]}, action, REG).double()
    _, cond = model_for("conditional_equivariant", scale=0.0)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        extra = {id(p) for m in cond.modules() if isinstance(m, (CouplingScale, ZeroModeSpline))
                 for p in m.parameters()}
        theirs = [(n, p) for n, p in cond.named_parameters() if id(p) not in extra and ".modulation." not in n]
        ours = list(plain.parameters())
        assert len(theirs) == len(ours)
        for (n, q), p in zip(theirs, ours):
            if q.shape == p.shape:
                q.copy_(p)
            else:  # first conv of a conditioner: input channels [field, beta, lam]
                assert q.shape[1] == p.shape[1] + 2, n
                q.zero_()
                q[:, :1].copy_(p)
    cond.condition({"beta": 0.33, "lam": 0.7})
    phi = torch.randn((4, 4, 4), generator=g, dtype=torch.float64)
    with torch.no_grad():
        want = plain.log_prob(phi)
        got = cond.log_prob(phi)
    assert_close_to_rounding(got, want, scalar_condition(plain.log_prob, phi), "conditional vs plain flow")


def test_sample_at_the_point_equals_sample_at_with_the_point_as_tensors():
    _, model = model_for("conditional_equivariant")
    model.condition({"beta": 0.41})
    with torch.no_grad():
        a = model.sample(4, torch.Generator().manual_seed(9))
        b = model.sample_at({"beta": torch.full((4,), 0.41, dtype=torch.float64),
                             "lam": torch.full((4,), 0.5, dtype=torch.float64)}, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def kl_estimate(model, action, n: int = 4096, seed: int = 11) -> tuple[float, float]:
    """mean and standard error of log q + S over couplings drawn from the range."""
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        c = model.draw_couplings(n, g)
        phi, log_q = model.sample_at(c, g)
        v = (log_q + action.action_at(phi, c)).double()
    return float(v.mean()), float(v.std() / math.sqrt(n))


def test_reverse_kl_over_a_small_range_decreases():
    """40 Adam steps of the conditional objective (couplings drawn per configuration) lower
    E_c E_q[log q + S] by more than 4 standard errors of its estimate."""
    action, model = model_for("conditional_equivariant", scale=0.0, couplings={"beta": [0.35, 0.45]})
    before, err0 = kl_estimate(model, action)
    loss = reverse_kl_objective(model, action, 64, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss().backward()
        opt.step()
    after, err1 = kl_estimate(model, action)
    assert before - after > 4 * math.hypot(err0, err1), (before, after)


def test_points_the_model_cannot_serve():
    _, model = model_for("conditional_multigrid", shape=(8, 8), couplings={"beta": [0.3, 0.45]})
    with pytest.raises(ConfigError, match="not conditioned on lam"):
        model.condition({"lam": 0.6})
    model.condition({"lam": 0.5})  # its training value: fine
    with pytest.raises(ConfigError, match="not a coupling"):
        model.condition({"m2": 0.1})
    with pytest.warns(LattgenWarning, match="outside its trained range"):
        model.condition({"beta": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.condition({"beta": 0.5})  # the same point again: warned once
        model.condition({"beta": 0.4})


def test_a_cpu_clock_budget_counts_process_time(monkeypatch):
    """[train] clock = "cpu": max_time_s is counted on time.process_time (here a fake clock that
    advances 1 s per read), not on the wall clock."""
    import time

    from lattgen.train import train

    action, model = model_for("conditional_equivariant", scale=0.0)
    ticks = iter(range(10**6))
    monkeypatch.setattr(time, "process_time", lambda: float(next(ticks)))
    res = train(model, action, {"max_time_s": 5, "batch_size": 4, "clock": "cpu", "log_every": 1000,
                                "eval_batch": 4}, generator=torch.Generator().manual_seed(0))
    assert res.stopped_by == "max_time_s" and 2 <= res.step <= 6 and res.elapsed_s >= 5


@pytest.mark.parametrize("t", [0.5, -1.0])
def test_a_tilted_draw_has_the_density_1_plus_t_2u_minus_1(t):
    """E[u] = 1/2 + t/6 and P(u > 1/2) = 1/2 + t/4 for the density 1 + t (2u - 1), within 4
    standard errors of 20000 draws (var u = 1/12 - t^2/36); the untilted coupling stays uniform."""
    _, model = model_for("conditional_multigrid", shape=(8, 8), scale=0.0)
    model.set_draw_tilt({"beta": t})
    n = 20000
    c = model.draw_couplings(n, torch.Generator().manual_seed(12))
    (lo, hi), (lo2, hi2) = model.coupling_range["beta"], model.coupling_range["lam"]
    u = (c["beta"] - lo) / (hi - lo)
    assert float(u.min()) >= 0.0 and float(u.max()) <= 1.0
    assert abs(float(u.mean()) - (0.5 + t / 6)) < 4 * math.sqrt((1 / 12 - t * t / 36) / n)
    p = 0.5 + t / 4
    assert abs(float((u > 0.5).double().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    v = (c["lam"] - lo2) / (hi2 - lo2)
    assert abs(float(v.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)


def test_a_bad_tilt_names_its_key():
    action = build_action({"name": "phi4", "lattice": [8, 8], "beta": 0.4, "lam": 0.5}, REG)
    spec = {"name": "conditional_multigrid", "couplings": {"beta": [0.3, 0.45]}, "hidden": [4]}
    with pytest.raises(ConfigError, match=r"model\.couplings_tilt\.beta: expected a number in \[-1, 1\]"):
        build_model({**spec, "couplings_tilt": {"beta": 1.5}}, action, REG)
    with pytest.raises(ConfigError, match=r"model\.couplings_tilt\.lam: not a coupling of the trained range"):
        build_model({**spec, "couplings_tilt": {"lam": 0.5}}, action, REG)
