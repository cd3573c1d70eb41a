"""CP^{N-1} on the command line: `lattgen sample` and `lattgen compare` end to end on a tiny lattice;
bad input (N < 2, beta not finite, non-unit or NaN fields in a loaded ensemble) is one line, exit 2."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from lattgen.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

ACTION = """
[action]
name = "cpn"
lattice = [4, 4]
N = {N}
beta = {beta}
"""


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error_line(res, needle):
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if "error" in ln.lower()]  # (a progress bar may precede it)
    assert len(errors) == 1 and errors[0].startswith("error:") and needle in errors[0], res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("n_comp, beta, needle", [(1, 1.0, "action.N"), (3, "inf", "action.beta"),
                                                  (3, "nan", "action.beta")])
def test_bad_parameters(tmp_path, n_comp, beta, needle):
    cfg = write(tmp_path, ACTION.format(N=n_comp, beta=beta) + '[sampler]\nname = "sphere_hmc"\n[run]\nn_samples = 64\n')
    one_error_line(invoke("sample", cfg, "--out", tmp_path / "o"), needle)
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize("fault, needle", [("nan", "non-finite"), ("scale", "unit length")])
def test_bad_fields_in_a_loaded_ensemble(tmp_path, fault, needle):
    g = torch.Generator().manual_seed(0)
    z = torch.randn((8, 4, 4, 3), generator=g, dtype=torch.complex128)
    z = z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    if fault == "nan":
        z[3, 1, 2, 0] = complex(math.nan, 0.0)
    else:
        z[5] *= 1.1
    torch.save(z, tmp_path / "ens.pt")
    cfg = write(tmp_path, ACTION.format(N=3, beta=0.5) + f"""
[model]
name = "cpn_flow"
n_layers = 2
hidden = [4]
[train]
max_steps = 2
loss = "forward_kl"
data = "{tmp_path / 'ens.pt'}"
""")
    one_error_line(invoke("train", cfg, "--out", tmp_path / "run"), needle)


def test_sample_and_compare_end_to_end(tmp_path):
    cfg = write(tmp_path, ACTION.format(N=2, beta=0.6) + '[sampler]\nname = "cpn_local"\n[run]\nn_samples = 256\nseed = 1\n')
    res = invoke("sample", cfg, "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert set(results["observables"]) >= {"topological_charge_squared", "topological_susceptibility", "cpn_xi", "cpn_energy"}
    comp = write(tmp_path, ACTION.format(N=2, beta=0.6) + """
[compare]
train_steps = 3
train_time_s = 30
n_samples = 256
n_therm = 20
workers = 1
[[entries]]
label = "flow"
model = { name = "cpn_flow", n_layers = 2, hidden = [4] }
sampler = { name = "imh", batch_size = 16 }
train = { batch_size = 16, dtype = "float64", eval_batch = 16 }
[[entries]]
label = "hmc"
sampler = { name = "sphere_hmc", n_chains = 8 }
""", "compare.toml")
    res = invoke("compare", comp, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "c" / "results.json").read_text())
    assert out["theory"]["figure_of_merit"] == "topological_charge_squared"
    for entry in out["entries"]:
        assert entry["performance"]["tau_int_topological_charge_squared"] > 0
        assert entry["action"]["N"] == 2 and "topological_susceptibility" in entry["observables"]


def test_decimated_flow_refuses_the_link_form(tmp_path):
    cfg = write(tmp_path, ACTION.format(N=3, beta=0.5) + 'form = "link"\n[model]\nname = "cpn_decimated"\nn_layers = 2\n'
                'hidden = [4]\n[train]\nmax_steps = 2\n')
    one_error_line(invoke("train", cfg, "--out", tmp_path / "run"), "quartic")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_decimated_flow_trains_and_samples_end_to_end(tmp_path):
    cfg = write(tmp_path, ACTION.format(N=3, beta=0.5) + '[model]\nname = "cpn_decimated"\nn_layers = 2\nhidden = [4]\n'
                '[train]\nmax_steps = 3\nbatch_size = 16\neval_batch = 16\n[sampler]\nname = "imh"\n[run]\nn_samples = 128\n')
    res = invoke("train", cfg, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    res = invoke("sample", tmp_path / "run", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "s" / "results.json").read_text())
    assert 0.0 < out["acceptance"] <= 1.0 and "topological_charge_squared" in out["observables"]
    assert out["model"]["name"] == "cpn_decimated"
