"""The core trainer, IMH and reweighting on complex CP^{N-1} fields: reverse KL lowers the loss of
cpn_flow and cpn_decimated, and IMH with the trained model agrees with sphere_hmc (fixed seeds, 4 sigma)."""

from __future__ import annotations

import math

import pytest
import torch
from training_helpers import adam_steps

from lattgen import Lattice, make_generator
from lattgen.analysis import analyse_chain
from lattgen.observable import measure_all
from lattgen.registry import get_registry
from lattgen.sampler import run_chain

pytestmark = pytest.mark.usefixtures("one_thread")
REG = get_registry()


@pytest.mark.parametrize("model_name", ["cpn_flow", "cpn_decimated"])
def test_reverse_kl_then_imh_agrees_with_hmc(model_name):
    lat = Lattice((4, 4))
    action = REG.get("action", "cpn").build(lat, params={"N": 2, "beta": 0.6})
    torch.manual_seed(0)
    model = REG.get("model", model_name).build(action, params={"n_layers": 4, "hidden": [8]}).double()
    losses = adam_steps(model, action, n_steps=60, batch_size=64, lr=5e-3)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 0.3, (first, last)  # the loss falls by far more than its noise (~0.1)
    names = ("cpn_energy", "cpn_chi_m", "topological_charge_squared")
    obs = {n: REG.get("observable", n, field="sphere").build(lat) for n in names}
    results = {}
    for sampler, params in (("imh", {"n_chains": 16, "batch_size": 32, "translate": True}),
                            ("sphere_hmc", {"n_chains": 16})):
        s = REG.get("sampler", sampler).build(action, params=params, device="cpu", dtype=torch.float64,
                                              generator=make_generator(3), model=model)
        chain = run_chain(s, measure_all(obs), 16 * 300, n_therm=50)
        assert s.state.is_complex() and torch.allclose(torch.linalg.vector_norm(s.state, dim=-1),
                                                       torch.ones((), dtype=torch.float64), atol=1e-12)
        results[sampler] = analyse_chain(chain, obs)
        if sampler == "imh":
            assert 0.2 < chain.acceptance < 1.0
    for name in names:
        a, b = results["imh"][name], results["sphere_hmc"][name]
        assert abs(a["value"] - b["value"]) < 4 * math.hypot(a["error"], b["error"]), (name, a, b)
