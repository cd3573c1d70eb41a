"""Configuration: TOML round trip, dotted overrides, and a clear error for every malformed key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lattgen.config import apply_overrides, dumps_toml, load_toml, parse_value, resolve_config
from lattgen.errors import ConfigError, LattgenError
from lattgen.registry import Registry

from fake_plugins import GaussPlugin

REG = Registry([("fake", GaussPlugin())], entry_points=False)


def base():
    return {
        "action": {"name": "gauss", "lattice": [4, 4], "m2": 1.5},
        "sampler": {"name": "exact", "n_chains": 2},
        "run": {"n_samples": 100, "seed": 3},
    }


def resolve(cfg):
    return resolve_config(cfg, REG)


def test_defaults_are_filled():
    cfg = resolve(base())
    assert cfg["run"]["device"] == "cpu" and cfg["run"]["measure_every"] == 1
    assert cfg["action"] == {"name": "gauss", "lattice": [4, 4], "m2": 1.5}


configs = st.fixed_dictionaries(
    {
        "action": st.fixed_dictionaries(
            {"name": st.just("gauss"), "lattice": st.lists(st.integers(2, 12), min_size=1, max_size=4),
             "m2": st.floats(0.01, 100, allow_nan=False)}
        ),
        "sampler": st.fixed_dictionaries({"name": st.sampled_from(["exact", "hmc"]), "n_chains": st.integers(1, 64)}),
        "run": st.fixed_dictionaries(
            {"n_samples": st.integers(2, 10**6), "seed": st.integers(0, 2**31), "measure_every": st.integers(1, 5),
             "dtype": st.sampled_from(["float32", "float64"])},
            optional={"n_therm": st.integers(0, 1000), "device": st.sampled_from(["cpu", "cuda", "cuda:1"])},
        ),
    }
)


@given(cfg=configs)
def test_round_trip_through_toml(cfg, tmp_path_factory):
    resolved = resolve(cfg)
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(dumps_toml(resolved))
    assert resolve(load_toml(path)) == resolved


def test_overrides_are_dotted_and_typed():
    cfg = apply_overrides(base(), ["action.m2=2", "run.seed=11", "action.lattice=[6, 8]", "sampler.name=hmc"])
    r = resolve(cfg)
    assert r["action"]["m2"] == 2.0 and r["run"]["seed"] == 11
    assert r["action"]["lattice"] == [6, 8] and r["sampler"]["name"] == "hmc"


@pytest.mark.parametrize("text,value", [("3", 3), ("0.5", 0.5), ("true", True), ("[1, 2]", [1, 2]),
                                        ('"x"', "x"), ("cuda", "cuda")])
def test_parse_value(text, value):
    assert parse_value(text) == value


BAD = [
    # (mutation, substring the message must contain: the dotted key, and what is valid)
    (lambda c: c["action"].update(m3=1.0), ["action.m3", "valid keys", "m2"]),
    (lambda c: c["action"].update(m2="big"), ["action.m2", "number"]),
    (lambda c: c["action"].update(m2=-1.0), ["action.m2", "> 0"]),
    (lambda c: c["action"].update(m2=float("inf")), ["action.m2", "inf", "finite"]),
    (lambda c: c["action"].update(m2=float("nan")), ["action.m2", "NaN"]),
    (lambda c: c.update(train={"max_steps": 5, "lr": float("inf")}), ["train.lr", "finite"]),
    (lambda c: c["action"].update(name="phi9"), ["action.name", "gauss"]),
    (lambda c: c["action"].pop("name"), ["action.name", "gauss"]),
    (lambda c: c["action"].pop("lattice"), ["action.lattice"]),
    (lambda c: c["action"].update(lattice=[4, 1]), ["action.lattice", ">= 2"]),
    (lambda c: c["action"].update(lattice="8x8"), ["action.lattice", "list"]),
    (lambda c: c["action"].update(lattice=[4.5, 4]), ["action.lattice[0]", "integer"]),
    (lambda c: c["sampler"].update(name="gibbs"), ["sampler.name", "exact", "hmc"]),
    (lambda c: c["sampler"].update(n_chains=0), ["sampler.n_chains", ">= 1"]),
    (lambda c: c["sampler"].update(n_chains=2.5), ["sampler.n_chains", "integer"]),
    (lambda c: c["run"].update(n_samples=1), ["run.n_samples", ">= 2"]),
    (lambda c: c["run"].update(n_samples=True), ["run.n_samples", "integer"]),
    (lambda c: c["run"].update(device="gpu"), ["run.device", "cuda"]),
    (lambda c: c["run"].update(dtype="float16"), ["run.dtype", "float64"]),
    (lambda c: c["run"].update(seeds=1), ["run.seeds", "seed"]),
    (lambda c: c["run"].update(observables=["nope"]), ["run.observables[0]", "nope"]),
    (lambda c: c.update(runs={}), ["runs", "unknown section", "run"]),
    (lambda c: c.update(run=5), ["run", "table"]),
    (lambda c: c.update(model={"name": "nope"}), ["model.name"]),
    (lambda c: c.update(train={"lr": 0.1}), ["train"]),
    (lambda c: c.pop("action"), ["[action]", "missing"]),
]


@pytest.mark.parametrize("mutate,needles", BAD)
def test_malformed_config_is_a_clear_error(mutate, needles):
    cfg = base()
    mutate(cfg)
    with pytest.raises(ConfigError) as exc:
        resolve(cfg)
    msg = str(exc.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


@pytest.mark.parametrize("item", ["seed", "run.seed", ".seed=1", "run..seed=1", "run.seed.x=1"])
def test_bad_override_is_a_clear_error(item):
    with pytest.raises(LattgenError):
        resolve(apply_overrides(base(), [item]))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[action\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)


def test_non_finite_numbers_only_where_a_parameter_allows_them():
    """`--set action.beta=inf` used to run and write "beta": null; NaN is never a value."""
    from lattgen.params import Param

    strict = Param("x", "list[float]", [], "xs")
    with pytest.raises(ConfigError, match=r"x\[1\]: -inf is not valid; a finite number is needed"):
        strict.validate([1.0, float("-inf")], "x")
    loose = Param("cutoff", "float", 1.0, "may be infinite", allow_inf=True, min=0)
    assert loose.validate(float("inf"), "cutoff") == float("inf")
    with pytest.raises(ConfigError, match="NaN"):
        loose.validate(float("nan"), "cutoff")
    assert apply_overrides({}, ["action.m2=inf"])["action"]["m2"] == float("inf")  # TOML's inf


def test_memory_is_estimated_before_anything_is_built(monkeypatch):
    """A lattice, chains or a batch that cannot fit is a ResourceError with the figure, from the
    configuration alone (the estimate is a lower bound: sites x element size x configurations)."""
    from lattgen import memory
    from lattgen.errors import ResourceError

    monkeypatch.setattr(memory, "total_memory_bytes", lambda device="cpu": 2**30)  # a 1 GiB machine
    cfg = base()
    cfg["action"]["lattice"] = [2**14, 2**14]  # 2^28 sites x 4 bytes: exactly 1 GiB, fits
    cfg["sampler"]["n_chains"] = 1
    cfg["run"]["dtype"] = "float32"
    resolve(cfg)
    cfg["sampler"]["n_chains"] = 2
    with pytest.raises(ResourceError, match=r"the sampler's 2 chains needs at least 2 GiB.*1 GiB.*n_chains"):
        resolve(cfg)
    cfg["action"]["lattice"] = [2**15, 2**14]
    with pytest.raises(ResourceError, match=r"action.lattice: .*one configuration needs at least 2 GiB"):
        resolve(cfg)
    assert memory.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert memory.is_out_of_memory(MemoryError()) and not memory.is_out_of_memory(RuntimeError("shape"))
