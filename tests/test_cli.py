"""The command line: listing, the `sample` contract, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lattgen.cli import cli
from lattgen.config import load_toml

CONTRACT = """
[action]
name = "phi4"
lattice = [6, 6]
beta = 0.45
lam = 1.0
[sampler]
name = "{sampler}"
[run]
n_samples = {n}
seed = 7
device = "cpu"
"""


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_json_has_every_kind_and_plugin():
    res = invoke("list", "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert {a["name"] for a in data["actions"]} >= {"phi4", "phi4_standard"}
    assert {s["name"] for s in data["samplers"]} >= {"hmc", "metropolis", "imh"}
    assert {m["name"] for m in data["models"]} >= {"affine", "spline", "equivariant", "gaussian"}
    assert {o["name"] for o in data["observables"]} >= {"abs_magnetisation", "susceptibility", "correlation_length"}
    phi4 = next(a for a in data["actions"] if a["name"] == "phi4")
    assert phi4["plugin"] == "phi4"
    assert {p["name"] for p in phi4["params"]} >= {"beta", "lam"}
    assert all("default" in p and "type" in p for p in phi4["params"])


def test_list_table_and_markdown():
    assert "phi4" in invoke("list").output
    md = invoke("list", "--markdown").output
    assert "### `hmc`" in md and "| `beta` |" in md


@pytest.mark.parametrize("sampler", ["hmc", "metropolis"])
def test_sample_contract(tmp_path, sampler):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONTRACT.format(sampler=sampler, n=2000))
    out = tmp_path / "out"
    res = invoke("sample", str(cfg), "--out", str(out), "--set", "run.seed=8")
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["action"] == {"name": "phi4", "lattice": [6, 6], "beta": 0.45, "lam": 1.0}
    assert results["sampler"]["name"] == sampler
    assert results["n_samples"] >= 2000 and 0 < results["acceptance"] <= 1 and results["wall_time_s"] > 0
    for name in ("abs_magnetisation", "susceptibility", "correlation_length"):
        entry = results["observables"][name]
        assert set(entry) >= {"value", "error", "tau_int", "tau_int_error"}
        assert entry["error"] > 0 and entry["tau_int"] > 0
    resolved = load_toml(out / "config.toml")
    assert resolved["run"]["seed"] == 8 and resolved["sampler"]["name"] == sampler
    assert "susceptibility" in res.output  # the table


def test_sample_is_reproducible(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONTRACT.format(sampler="hmc", n=400))
    a = invoke("sample", str(cfg), "--out", str(tmp_path / "a"), "--set", "sampler.n_chains=8")
    b = invoke("sample", str(cfg), "--out", str(tmp_path / "b"), "--set", "sampler.n_chains=8")
    assert a.exit_code == b.exit_code == 0
    ra = json.loads((tmp_path / "a" / "results.json").read_text())["observables"]
    rb = json.loads((tmp_path / "b" / "results.json").read_text())["observables"]
    assert ra["susceptibility"] == rb["susceptibility"]


@pytest.mark.parametrize("override,needle", [
    ("action.lam=-1", "action.lam"),
    ("action.betta=0.3", "action.betta"),
    ("action.beta=abc", "action.beta"),
    ("action.beta=inf", "finite number"),
    ("sampler.name=gibbs", "sampler.name"),
    ("run.n_samples=1", "run.n_samples"),
    ("run.device=tpu", "run.device"),
    ("action.lattice=[6, 0]", "action.lattice"),
    ("run", "--set"),
])
def test_bad_input_is_one_clear_line(tmp_path, override, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONTRACT.format(sampler="hmc", n=100))
    proc = subprocess.run([sys.executable, "-m", "lattgen", "sample", str(cfg), "--set", override,
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr and proc.stderr.strip().startswith("error:")
    assert not (tmp_path / "o" / "results.json").exists()


def test_missing_config_and_run_dir(tmp_path):
    res = CliRunner().invoke(cli, ["sample", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "neither a config file nor a run directory" in res.output
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["sample", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "error" in res.output
