"""`lattgen export --pyerrors`: pyerrors reads the file and reproduces lattgen's analysis.

Tolerance (docs/ensembles.md): pyerrors subtracts each replica's own mean dbar_r, which lowers
every Gamma(t) by mean_r dbar_r^2 = C_F X / N with X ~ chi^2_R (R replicas, E X = R), and it does
not add lattgen's bias correction C_F/N; summed over the 2W + 1 lags of the window, its C_F (and
so error^2 and tau_int) is lower than lattgen's by a relative (2W + 1)(X + 1)/N. Allowed: X at
its 1 - 1e-4 quantile (a ~4 sigma bound). Values are stored, so they are exact.
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings

import pytest
from click.testing import CliRunner
from scipy.stats import chi2

from lattgen.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """
[action]
name = "phi4"
lattice = [4, 4]
beta = 0.45
lam = 1.0
[sampler]
name = "hmc"
n_chains = 4
[run]
n_samples = 4000
n_therm = 50
seed = 11
"""


@pytest.fixture(scope="module")
def pe():
    with warnings.catch_warnings():  # pyerrors imports the deprecated scipy.odr
        warnings.simplefilter("ignore")
        return pytest.importorskip("pyerrors")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "c.toml").write_text(CONFIG)
    res = invoke("sample", str(tmp / "c.toml"), "--out", str(tmp / "run"))
    assert res.exit_code == 0, res.output
    return tmp / "run"


def _components(entry):
    keys = ("value", "error", "tau_int", "window")
    if isinstance(entry["value"], list):
        return [dict(zip(keys, vals)) for vals in zip(*(entry[k] for k in keys))]
    return [{k: entry[k] for k in keys}]


@pytest.mark.numerical
def test_pyerrors_round_trip_reproduces_value_error_and_tau_int(pe, run, tmp_path):
    res = invoke("export", "--pyerrors", str(run), "--out", str(tmp_path / "r.json.gz"))
    assert res.exit_code == 0, res.output
    results = json.loads((run / "results.json").read_text())
    loaded = pe.input.json.load_json(str(tmp_path / "r.json.gz"), verbose=False)
    assert len(loaded) == len(results["observables"])  # one Obs (or List) per observable
    n_total, n_rep = results["n_samples"], results["n_chains"]
    checked = 0
    for (name, entry), item in zip(results["observables"].items(), loaded):
        ours = _components(entry)
        theirs = item if isinstance(item, list) else [item]
        assert len(theirs) == len(ours), name
        for j, (o, x) in enumerate(zip(ours, theirs)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x.gamma_method(S=1.5)
            (ens,) = x.mc_names
            assert len(x.e_content[ens]) == n_rep  # the chains are the replicas
            assert x.value == o["value"], (name, j)
            if not entry["reliable"]:
                continue
            rtol = (2 * o["window"] + 1) * (1 + chi2.ppf(1 - 1e-4, n_rep)) / n_total
            assert x.dvalue == pytest.approx(o["error"], rel=rtol), (name, j)
            assert x.e_tauint[ens] == pytest.approx(o["tau_int"], rel=rtol), (name, j)
            checked += 1
    assert checked >= 10


def test_compare_entries_are_separate_ensembles(pe, run, tmp_path):
    """A compare directory: every entry an ensemble of its own, tags prefixed by the label."""
    results = json.loads((run / "results.json").read_text())
    for label in ("a", "b"):
        shutil.copytree(run, tmp_path / "entries" / label)
        entry = dict(results, label=label)
        (tmp_path / "entries" / label / "results.json").write_text(json.dumps(entry))
    (tmp_path / "results.json").write_text(json.dumps({"entries": [{"label": "a"}, {"label": "b"}]}))
    res = invoke("export", "--pyerrors", str(tmp_path / "results.json"))
    assert res.exit_code == 0, res.output
    doc = json.loads(gzip.decompress((tmp_path / "pyerrors.json.gz").read_bytes()))
    assert doc["version"] == "1.1" and doc["program"].startswith("lattgen")
    ids = {d["id"] for o in doc["obsdata"] for d in o["data"]}
    assert len(ids) == 2 and all(i.startswith(("a_", "b_")) for i in ids)
    tags = [t for o in doc["obsdata"] for t in o["tag"]]
    assert "a/susceptibility" in tags and "b/susceptibility" in tags
    loaded = pe.input.json.load_json(str(tmp_path / "pyerrors.json.gz"), verbose=False)
    assert len(loaded) == 2 * len(results["observables"])


def test_a_thinned_ensemble_lines_up_with_its_run(pe, run, tmp_path):
    """analyse of an ensemble saved every 4th measurement: the same pyerrors ensemble, configurations
    1, 5, 9, ...; pyerrors then correlates it with the full run's Obs."""
    res = invoke("sample", str(run / "config.toml"), "--out", str(tmp_path / "s"), "--save-configs",
                 "--save-every", "4", "--set", "run.n_samples=800")
    assert res.exit_code == 0, res.output
    res = invoke("analyse", str(tmp_path / "s" / "ensemble.h5"), "--observables", "susceptibility",
                 "--out", str(tmp_path / "a"))
    assert res.exit_code == 0, res.output
    full = pe.input.json.load_json(str(invoke_export(tmp_path / "s")), verbose=False)
    thin = pe.input.json.load_json(str(invoke_export(tmp_path / "a")), verbose=False)
    (ens,) = thin.mc_names
    assert ens in full[0].mc_names  # one Monte Carlo ensemble
    assert list(thin.idl[f"{ens}|r0"]) == list(range(1, 201, 4))


def invoke_export(directory):
    res = invoke("export", "--pyerrors", str(directory))
    assert res.exit_code == 0, res.output
    return directory / "pyerrors.json.gz"


def test_export_without_primaries_is_one_line(run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "primaries.npz").unlink()
    res = CliRunner().invoke(cli, ["export", "--pyerrors", str(old)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "primaries.npz" in res.output
    res = CliRunner().invoke(cli, ["export", str(run)])
    assert res.exit_code == 2 and "--pyerrors" in res.output
    res = CliRunner().invoke(cli, ["export", "--pyerrors", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "results.json" in res.output
