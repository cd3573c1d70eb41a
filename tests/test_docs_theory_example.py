"""The worked example of a new theory plugin in docs/plugins.md runs as written, on the core as is."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from lattgen.config import resolve_config
from lattgen.registry import Registry
from lattgen.sample import run_sampling

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture(scope="module")
def xy_registry():
    text = DOC.read_text()
    section = text[text.index("## A new theory in one file"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("lattgen_xy_doc_example")
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    return Registry([("xy", module)])


def test_xy_example_registers_with_its_theory(xy_registry):
    assert "xy" in xy_registry.names("action")
    theory = xy_registry.theory("xy")
    assert theory.default_sampler == "hmc" and theory.figure_of_merit == "xy_energy"
    action = xy_registry.get("action", "xy").build(__import__("lattgen").Lattice([4, 4]), params={"beta": 1.0})
    assert action.field_space.manifold == "site_angle"
    # the default observables of the xy action are its own, not the real-field ones
    assert xy_registry.for_field("observable", action.field_space) == ["xy_energy"]


def test_xy_example_samples_with_hmc_and_wraps_angles(xy_registry):
    """HMC (the theory's default sampler) on the 4x4 XY model at beta = 0: the energy of
    independent uniform angles is 0 exactly, within 4 sigma of the Gamma-method error."""
    import math

    config = resolve_config({"action": {"name": "xy", "lattice": [4, 4], "beta": 0.0},
                             "sampler": {"n_chains": 16}, "run": {"n_samples": 1600, "seed": 2}},
                            xy_registry)
    assert config["sampler"]["name"] == "hmc"
    results, chain = run_sampling(config, registry=xy_registry)
    assert set(results["observables"]) == {"xy_energy"}
    energy = results["observables"]["xy_energy"]
    assert abs(energy["value"]) < 4 * energy["error"], energy
    primaries = chain.primaries["xy_energy"]
    assert primaries.shape == (100, 16, 1)
    assert math.isfinite(results["acceptance"]) and results["acceptance"] > 0.3
