"""Continuous couplings of an action: declaration, per-configuration evaluation, trained ranges."""

from __future__ import annotations

import pytest
import torch
from rounding import assert_close_to_rounding, scalar_condition

from lattgen import ConfigError, Lattice, Param, coupling_ranges
from lattgen.build import build_action
from lattgen.registry import get_registry

REG = get_registry()


def test_param_coupling_flag_and_registry_listing():
    assert set(REG.get("action", "phi4").couplings()) == {"beta", "lam"}
    assert set(REG.get("action", "phi4_standard").couplings()) == {"m2", "lamA"}
    action = build_action({"name": "phi4", "lattice": [4, 4], "beta": 0.6, "lam": 0.5}, REG)
    assert set(action.coupling_params) == {"beta", "lam"}
    assert action.couplings() == {"beta": 0.6, "lam": 0.5}
    assert Param("x", "float", coupling=True).to_dict()["coupling"] is True
    with pytest.raises(ValueError):
        Param("n", "int", coupling=True)


@pytest.mark.numerical
@pytest.mark.parametrize("name, ranges, fixed", [
    ("phi4", {"beta": (0.3, 0.8), "lam": (0.0, 2.0)}, {}),
    ("phi4_standard", {"m2": (-4.0, 1.0), "lamA": (0.5, 3.0)}, {}),
    ("phi4", {"beta": (0.3, 0.8)}, {"lam": 0.7}),  # a coupling not given keeps the action's value
])
def test_action_at_equals_the_scalar_action_at_each_point(name, ranges, fixed):
    """S(phi_i; c_i) vectorised = the action built at c_i, configuration by configuration."""
    g = torch.Generator().manual_seed(1)
    n, shape = 6, [4, 6]
    base = {"name": name, "lattice": shape, **{k: lo for k, (lo, _) in ranges.items()}, **fixed}
    action = build_action(base, REG)
    c = {k: lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64) for k, (lo, hi) in ranges.items()}
    phi = 1.5 * torch.randn((n, *shape), generator=g, dtype=torch.float64)
    got = action.action_at(phi, c)
    for i in range(n):
        point = build_action({**base, **{k: float(v[i]) for k, v in c.items()}}, REG)
        want = point.action(phi[i:i + 1])
        assert_close_to_rounding(got[i:i + 1], want, scalar_condition(point.action, phi[i:i + 1]),
                                 f"{name} action_at, configuration {i}")


def test_action_at_refuses_an_unknown_coupling():
    action = build_action({"name": "phi4", "lattice": [4, 4], "beta": 0.6}, REG)
    phi = torch.zeros(2, 4, 4, dtype=torch.float64)
    with pytest.raises(ConfigError, match="not a coupling"):
        action.action_at(phi, {"m2": torch.zeros(2, dtype=torch.float64)})


def test_coupling_ranges_checks_names_bounds_and_order():
    action = build_action({"name": "phi4", "lattice": [4, 4], "beta": 0.6}, REG)
    assert coupling_ranges(action, {"beta": [0.55, 0.7]}) == {"beta": (0.55, 0.7)}
    default = coupling_ranges(action, None)
    assert default["beta"] == pytest.approx((0.54, 0.66)) and default["lam"] == pytest.approx((0.45, 0.55))
    for bad, match in (({"kappa": [0, 1]}, "model.couplings.kappa: not a coupling"),
                       ({"beta": [-0.1, 0.5]}, r"beta\[0\].*out of range"),
                       ({"beta": [0.7, 0.5]}, "lo = 0.7 > hi"),
                       ({"beta": 0.5}, r"expected \[lo, hi\]"),
                       ({}, "expected a table")):
        with pytest.raises(ConfigError, match=match):
            coupling_ranges(action, bad)
    with pytest.raises(ConfigError):
        Lattice([4, 4]) and coupling_ranges(type("A", (), {"coupling_params": {}, "name": "x"})(), None)
