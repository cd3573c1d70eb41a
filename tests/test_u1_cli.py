"""2D U(1) end to end through the command line: train, sample RUN_DIR (imh), compare, scale;
bad input is one ``error:`` line and exit status 2. Tiny budgets: this checks the wiring, the
physics is checked in test_u1.py."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from lattgen.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = """
[action]
name = "u1"
lattice = [4, 4]
beta = 1.0
[model]
name = "u1_equivariant"
n_layers = 8
hidden = [8]
[train]
max_steps = 4
batch_size = 16
eval_batch = 64
log_every = 4
[run]
n_samples = 128
n_therm = 10
"""

COMPARE = """
[action]
name = "u1"
lattice = [4, 4]
beta = 1.0
[compare]
train_steps = 3
train_time_s = 60
n_samples = 256
n_therm = 10
workers = 1
[[entries]]
label = "flow"
model = { name = "u1_equivariant", n_layers = 8, hidden = [8] }
train = { batch_size = 16, eval_batch = 64 }
[[entries]]
sampler = { name = "hmc", n_chains = 16, trajectory_length = 1.0 }
[[entries]]
sampler = { name = "u1_heatbath", n_chains = 16 }
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("u1")
    cfg = tmp / "train.toml"
    cfg.write_text(TRAIN)
    res = CliRunner().invoke(cli, ["train", str(cfg), "--out", str(tmp / "run")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tmp


def test_train_then_sample_the_run_directory(trained):
    out = trained / "sample"
    res = invoke("sample", trained / "run", "--out", out)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["sampler"]["name"] == "imh" and results["action"]["name"] == "u1"
    assert 0 < results["acceptance"] <= 1
    for name in ("plaquette", "topological_charge_squared", "wilson_loops", "string_tension"):
        assert name in results["observables"]


def test_compare_runs_flow_hmc_and_heatbath(tmp_path):
    cfg = tmp_path / "compare.toml"
    cfg.write_text(COMPARE)
    res = invoke("compare", cfg, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [e["label"] for e in summary["entries"]] == ["flow", "hmc", "u1_heatbath"]
    assert summary["theory"]["figure_of_merit"] == "topological_charge_squared"
    for e in summary["entries"]:
        assert "tau_int_topological_charge_squared" in e["performance"]
    assert "topological_charge_squared" in res.output
    from lattgen_u1.exact import exact_results

    from lattgen import Lattice

    exact = exact_results(Lattice([4, 4]), 1.0)
    assert summary["exact"]["topological_charge_squared"] == exact["topological_charge_squared"]
    assert summary["exact"]["plaquette"] == exact["plaquette"] and "exact" in res.output


def test_scale_along_beta(tmp_path):
    cfg = tmp_path / "scale.toml"
    cfg.write_text("""
[action]
name = "u1"
[scale]
points = [[4, 1.0], [4, 2.0]]
[compare]
train_time_s = 10
n_samples = 256
n_therm = 10
workers = 1
[[entries]]
sampler = { name = "u1_heatbath", n_chains = 16 }
""")
    res = invoke("scale", cfg, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.parametrize("override, words", [
    ("action.beta=inf", "finite"),
    ("action.beta=-1.0", "action.beta"),
    ("action.lattice=[6, 6]", "multiples of 4"),
])
def test_bad_input_is_one_line(trained, override, words):
    cfg = trained / "bad.toml"
    cfg.write_text(TRAIN)
    res = invoke("train", cfg, "--out", trained / f"bad-{abs(hash(override))}", "--set", override)
    assert words in one_error_line(res)


def test_run_directory_with_another_field_space_is_one_line(trained):
    """The U(1) flow's links (batch, 2, L, L) cannot propose phi^4 fields (batch, L, L)."""
    res = invoke("sample", trained / "run", "--set", "action.name=phi4", "--set", "action.beta=0.3",
                 "--out", trained / "wrong")
    assert "does not fit" in one_error_line(res)


def test_angles_outside_the_circle_in_loaded_data_are_one_line(trained):
    data = torch.zeros((8, 2, 4, 4))
    data[3, 1, 2, 2] = 4.0  # not in (-pi, pi]
    path = trained / "data.pt"
    torch.save(data, path)
    cfg = trained / "fkl.toml"
    cfg.write_text(TRAIN)
    res = invoke("train", cfg, "--out", trained / "fkl", "--set", "train.loss=forward_kl",
                 "--set", f"train.data={json.dumps(str(path))}")
    assert "outside (-pi, pi]" in one_error_line(res)
