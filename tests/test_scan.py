"""`lattgen scan`: points, entries (conditional trained once / from a run directory, classical),
resume, the report, and one-line errors for scans that cannot run (small: L = 4, few samples)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lattgen import ConfigError
from lattgen.cli import cli
from lattgen.config import load_toml, resolve_config
from lattgen.registry import get_registry
from lattgen.rundir import train_run
from lattgen.scan import resolve_scan, run_scan

REG = get_registry()
BASE = """
[action]
name = "phi4"
lattice = [4, 4]
lam = 0.5
[scan]
{scan}
n_samples = 128
train_steps = 4
"""
ENTRIES = """
[[entries]]
label = "cond"
model = {name = "conditional_equivariant", hidden = [4], n_layers = 2}
sampler = {name = "imh", n_chains = 4}
[[entries]]
sampler = {name = "hmc", n_chains = 4}
"""


def write(tmp_path, scan: str, entries: str = ENTRIES):
    path = tmp_path / "scan.toml"
    path.write_text(BASE.format(scan=scan) + entries)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_scan_end_to_end_resumes_and_extends(tmp_path):
    cfg = write(tmp_path, "beta = {start = 0.4, stop = 0.5, num = 2}")
    out = tmp_path / "out"
    res = invoke("scan", cfg, "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads((out / "results.json").read_text())
    assert [(r["beta"], r["label"]) for r in result["rows"]] == [(0.4, "cond"), (0.5, "cond"), (0.4, "hmc"),
                                                                  (0.5, "hmc")]
    for r in result["rows"]:
        assert 0 < r["acceptance"] <= 1 and r["susceptibility_error"] > 0 and r["susceptibility_tau_int"] > 0
    totals = {t["label"]: t for t in result["totals"]}
    assert totals["cond"]["kind"] == "conditional" and totals["cond"]["train_time_s"] > 0
    assert totals["hmc"]["train_time_s"] == 0
    assert (out / "scan.png").is_file() and "total cost of the scan" in res.output
    # the conditional model was trained once, over the scan's box, recorded in its run directory
    recorded = load_toml(out / "train" / "cond" / "config.toml")
    assert recorded["model"]["couplings"] == {"beta": [0.4, 0.5]} and recorded["action"]["beta"] == 0.45
    done = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("results.json")}
    assert len(done) == 4
    # rerun with one more point: only the new (point, entry) pairs are sampled
    write(tmp_path, "beta = [0.4, 0.5, 0.45]")
    res = invoke("scan", cfg, "--out", out)
    assert res.exit_code == 0, res.output
    again = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("results.json")}
    assert all(again[p] == done[p] for p in done) and len(again) == 6


@pytest.mark.parametrize("scan, needle", [
    ("beta = [-0.1, 0.5]", "scan.beta[0]: -0.1 is out of range"),
    ("beta = []", "scan.beta: the scan is empty"),
    ("seed = 3", "[scan]: the scan is empty"),
    ("kappa = [0.1]", "scan.kappa: unknown coupling of action 'phi4'"),
    ("beta = {start = 0.4, stop = 0.5}", "scan.beta.num: required key is missing"),
    ("lam = [0.0]\nbeta = [0.6]", "scan point lam0_beta0.6"),  # free field past its critical point
])
def test_bad_scans_are_one_line_exit_2(tmp_path, scan, needle):
    res = invoke("scan", write(tmp_path, scan), "--out", tmp_path / "o")
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert lines[0].startswith("error:") and needle in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not (tmp_path / "o" / "results.json").exists()


def test_a_grid_over_two_couplings():
    raw = {"action": {"name": "phi4", "lattice": [4, 4]}, "scan": {"beta": [0.3, 0.35], "lam": [0.5, 1.0, 2.0]}}
    resolved = resolve_scan(raw, REG)
    assert len(resolved["points"]) == 6 and resolved["points"][-1] == {"beta": 0.35, "lam": 2.0}
    assert [e["label"] for e in resolved["entries"]] == ["hmc", "metropolis"]  # the theory's samplers


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A conditional model trained 3 steps over beta in [0.35, 0.45] (lam fixed at 0.5)."""
    out = tmp_path_factory.mktemp("cond")
    cfg = resolve_config({"action": {"name": "phi4", "lattice": [4, 4], "beta": 0.4, "lam": 0.5},
                          "model": {"name": "conditional_equivariant", "hidden": [4], "n_layers": 2,
                                    "couplings": {"beta": [0.35, 0.45]}},
                          "train": {"max_steps": 3, "batch_size": 16}}, REG, require=("action", "model", "train"))
    train_run(cfg, out, registry=REG)
    return out


def test_a_conditional_run_directory_serves_its_range_and_refuses_other_couplings(tmp_path, conditional_run):
    entries = f'[[entries]]\nrun_dir = "{conditional_run}"\nlabel = "amortised"\nsampler = {{name = "imh", n_chains = 2}}\n'
    raw = {"action": {"name": "phi4", "lattice": [4, 4], "lam": 0.5},
           "scan": {"beta": [0.4, 0.5], "n_samples": 64},
           "entries": [{"run_dir": str(conditional_run), "label": "amortised", "sampler": {"name": "imh", "n_chains": 2}}]}
    with pytest.warns(Warning, match="outside its trained range"):  # 0.5 > 0.45: exact, with a warning
        result = run_scan(resolve_scan(raw, REG), tmp_path / "o", registry=REG)
    assert [r["beta"] for r in result["rows"]] == [0.4, 0.5] and result["totals"][0]["kind"] == "run_dir"
    # a point on lam, which it was not conditioned on: one line, exit 2, before anything is sampled
    res = invoke("scan", write(tmp_path, "lam = [0.5, 0.7]\nbeta = [0.4]", entries), "--out", tmp_path / "o2")
    assert res.exit_code == 2 and "not conditioned on lam" in res.output, res.output
    assert not (tmp_path / "o2" / "points").exists()
    res = invoke("sample", conditional_run, "--set", "action.lam=0.7", "--out", tmp_path / "o3")
    assert res.exit_code == 2 and res.output.startswith("error:") and "not conditioned on lam" in res.output
    # inside its range the conditional model is not "sampling another target"; outside it, it is
    res = invoke("sample", conditional_run, "--set", "action.beta=0.42", "--set", "run.n_samples=32",
                 "--set", "sampler.n_chains=2", "--out", tmp_path / "o5")
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "inside the coupling range" in said and "another target" not in said
    with pytest.raises(ConfigError, match="not a conditional model"):
        bad = dict(raw, entries=[{"run_dir": str(conditional_run)}])
        plain = tmp_path / "plain"
        train_run(resolve_config({"action": {"name": "phi4", "lattice": [4, 4], "beta": 0.4},
                                  "model": {"name": "gaussian"}, "train": {"max_steps": 1}}, REG,
                                 require=("action", "model", "train")), plain, registry=REG)
        bad["entries"] = [{"run_dir": str(plain)}]
        run_scan(resolve_scan(bad, REG), tmp_path / "o4", registry=REG)


def test_scale_in_the_broken_phase_against_L_with_sign_flips(tmp_path):
    """[scale] x = "L" with observable = "magnetisation": tau_int(m) against L at fixed beta, and
    the sign flips of each chain (magnetisation_sign's chain statistic) in every row."""
    from lattgen.scaling import resolve_scale, run_scale

    raw = {"action": {"name": "phi4", "lattice": [4, 4], "beta": 0.7, "lam": 0.5},
           "scale": {"points": [[4, 0.7], [6, 0.7]], "coupling": "beta", "x": "L", "observable": "magnetisation"},
           "compare": {"n_samples": 256, "workers": 1},
           "entries": [{"sampler": {"name": "hmc", "n_chains": 4}}]}
    result = run_scale(resolve_scale(raw, REG), tmp_path, registry=REG)
    assert result["figure_of_merit"] == "magnetisation"
    assert [r["xi"] for r in result["rows"]] == [4.0, 6.0]
    for r in result["rows"]:
        assert r["tau_int"] > 0 and 0 <= r["magnetisation_sign_sign_flips"] <= 4 * 64
        assert r["magnetisation_sign_chains_without_flip"] <= 4
    with pytest.raises(ConfigError, match="scale.observable: unknown observable 'nope'"):
        resolve_scale({**raw, "scale": {**raw["scale"], "observable": "nope"}}, REG)
