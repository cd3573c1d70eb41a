"""The common MCMC harness behind `lattgen compare`: every entry on equal terms.

Each entry is a (model, sampler) pair or a classical sampler. All entries share the action, the
training budget, the number of samples, the thermalisation rule, the observables and the
analysis (one Gamma method). Entries run in worker processes where cores allow; each finished
entry is written to ``OUT/entries/LABEL/results.json`` at once, so a rerun with the same
``--out`` resumes and Ctrl-C loses nothing finished.

Under torchrun the entries run one after the other in every process, each entry's training and
sampling spread over the ranks (``lattgen.train``, ``lattgen.sample``); rank 0 alone writes,
the others read what it wrote (``--out`` on a filesystem every node sees).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed
from .checkpoints import METRICS, read_metrics
from .compare_config import config_hash, entry_config, resolve_compare, toml_ready  # noqa: F401  (API)
from .consistency import consistency
from .entry_pool import run_parallel
from .export import PRIMARIES, primaries_npz
from .jsonio import read_finished
from .metadata import METADATA, metadata_text
from .outdir import write_together
from .registry import Registry, get_registry
from .theory import Theory


# -- one entry ------------------------------------------------------------------------------
def run_entry(
    entry: Mapping[str, Any],
    action: Mapping[str, Any],
    compare: Mapping[str, Any],
    out_dir: str | Path,
    registry: Registry | None = None,
    progress: Callable[[str, str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Train (if a model) and sample one entry; write its results.json and plot data; return results."""
    import torch

    from .config import dumps_toml
    from .jsonio import json_text
    from .sample import run_sampling

    torch.set_num_threads(compare["threads"])
    reg = registry or get_registry()
    out = Path(out_dir)
    main = distributed.is_main()
    cfg = entry_config(entry, action, compare)
    cfg_hash = config_hash(cfg)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    label = entry["label"]
    model, training = None, None
    if "model" in cfg:
        from .rundir import load_trained, train_run

        def train_progress(done, total, metrics=None):
            if progress:
                progress(label, "train", done, total)

        t0 = time.perf_counter()
        data_s = 0.0
        if needs_data(cfg, reg):
            # torchrun: rank 0 makes the data; its file and generation time serve every rank
            cfg["train"], data_s = distributed.run_on_main(prepare_data, cfg, out, compare["data_samples"], reg)
        train_run(cfg, out / "train", registry=reg, progress=train_progress, resume=True)
        _, _, model = load_trained(out / "train", reg)
        training = distributed.run_on_main(training_summary, out / "train", time.perf_counter() - t0, data_s)

    def sample_progress(done, total):
        if progress:
            progress(label, "sample", done, total)

    results, chain = run_sampling(cfg, model=model, registry=reg, progress=sample_progress)
    results["label"] = label
    results["config_hash"] = cfg_hash
    results["training"] = training
    theory = reg.theory(cfg["action"]["name"])
    results["performance"] = performance(results, training, compare["target_rel_error"], theory)
    if main:  # results.json last: it marks the entry finished (with config.toml, in one commit)
        np.savez_compressed(out / "plotdata.npz", **plot_arrays(chain, theory.histogram))
        write_together(out, {"config.toml": dumps_toml(cfg), "results.json": json_text(results),
                             PRIMARIES: primaries_npz(chain)})
    return results


def prepare_data(cfg: Mapping[str, Any], out: Path, n: int, registry: Registry) -> tuple[dict[str, Any], float]:
    """HMC training data for a model that needs it, paid from the entry's training budget.

    Returns the entry's [train] section switched to forward KL on the data (``data_loss``: the
    negative ELBO for a VAE) with ``max_time_s`` reduced by the generation time, and that time.
    """
    import torch

    from .build import build_action
    from .training_data import make_training_data

    path = out / "train_data.pt"
    t0 = time.perf_counter()
    if not path.is_file():  # resumed entries reuse their data
        data = make_training_data(build_action(cfg["action"], registry), n, cfg["run"]["seed"], registry=registry)
        tmp = path.with_suffix(".tmp")
        torch.save(data.float(), tmp)
        tmp.replace(path)
    data_s = time.perf_counter() - t0
    train = dict(cfg["train"], loss="forward_kl", data=str(path))
    if train.get("max_time_s") is not None:
        # equal terms: data generation is part of the budget (at least 10% is left to train)
        train["max_time_s"] = max(0.1 * train["max_time_s"], train["max_time_s"] - data_s)
    return train, data_s


def training_summary(train_dir: Path, wall_s: float, data_s: float = 0.0) -> dict[str, Any]:
    """Training figures from metrics.jsonl: time (data generation included), steps, learning curve."""
    curve = read_metrics(train_dir / METRICS)
    for record in curve:
        record["time"] = record.get("time", 0.0) + data_s
    last = curve[-1] if curve else {}
    return {
        "train_time_s": last.get("time", wall_s),
        "data_time_s": data_s,
        "steps": last.get("step"),
        "final": last,
        "curve": curve,
    }


def needs_data(cfg: Mapping[str, Any], registry: Registry) -> bool:
    """Whether the entry's model trains on configurations (``GenerativeModel.requires_data``)."""
    from .build import build_action, build_model

    return build_model(cfg["model"], build_action(cfg["action"], registry), registry).requires_data


def performance(results: Mapping[str, Any], training: Mapping[str, Any] | None, target: float,
                theory: Theory) -> dict[str, Any]:
    """Cost figures of the theory's figure of merit F: ESS(F)/s, time to a target relative error
    on F including training; tau_int of every headline observable (``tau_int_<name>``)."""
    chi = results["observables"].get(theory.figure_of_merit, {}) if theory.figure_of_merit else {}
    wall = results["wall_time_s"]
    train_s = (training or {}).get("train_time_s") or 0.0
    out: dict[str, Any] = {"train_time_s": train_s, "sample_time_s": wall}
    n_eff = chi.get("n_eff")
    out["ess_per_s"] = n_eff / wall if n_eff and wall > 0 else None
    value, err = chi.get("value"), chi.get("error")
    if value and err and wall > 0:
        rel = abs(err / value)
        out["time_to_target_s"] = train_s + results.get("therm_time_s", 0.0) + wall * (rel / target) ** 2
    else:
        out["time_to_target_s"] = None
    for obs in dict.fromkeys([*theory.headline, *([theory.figure_of_merit] if theory.figure_of_merit else [])]):
        o = results["observables"].get(obs, {})
        out[f"tau_int_{obs}"] = o.get("tau_int")
        out[f"tau_int_{obs}_error"] = o.get("tau_int_error")
    return out


def plot_arrays(chain, histogram: str | None) -> dict[str, np.ndarray]:
    """What the plots need from a chain: the histogrammed observable's first primary per
    configuration (``hist``), log-weights, accept history."""
    arrays: dict[str, np.ndarray] = {"accepted": chain.accepted.astype(np.float32)}
    if histogram in chain.primaries:
        arrays["hist"] = chain.primaries[histogram][..., 0].astype(np.float32)
    for key, value in chain.extras.items():
        arrays[key] = np.asarray(value)
    return arrays


# -- the whole comparison ---------------------------------------------------------------------
def run_compare(
    resolved: Mapping[str, Any],
    out_dir: str | Path,
    registry: Registry | None = None,
    progress: Callable[[str, str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every entry; write OUT/results.json and plots; return the summary."""
    from .config import dumps_toml
    from .jsonio import json_text
    from .plots import compare_plots

    out = Path(out_dir)
    main = distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    action, compare = resolved["action"], resolved["compare"]
    results: dict[str, dict[str, Any]] = {}
    todo = []
    finished = distributed.run_on_main(
        lambda: {e["label"]: _finished(e, action, compare, out) for e in resolved["entries"]})
    for entry in resolved["entries"]:
        done = finished[entry["label"]]
        if done is not None:
            results[entry["label"]] = done
        else:
            todo.append(entry)
    workers = compare["workers"] or min(os.cpu_count() or 1, 2)
    if distributed.active():
        workers = 1  # every entry is spread over the ranks instead
    if workers <= 1 or len(todo) <= 1 or registry is not None:
        for entry in todo:  # in-process (also what a custom registry needs: it cannot be pickled)
            results[entry["label"]] = run_entry(entry, action, compare, out / "entries" / entry["label"],
                                                registry=registry, progress=progress)
    else:
        results.update(run_parallel(todo, action, compare, out, workers, progress))
    ordered = [results[e["label"]] for e in resolved["entries"]]
    exact = exact_scalars(action, ordered, registry)
    cons = consistency(ordered, compare["sigma"], exact)
    for r in ordered:
        r["consistency"] = cons[r["label"]]
    summary = {"action": action, "compare": compare, "theory": resolved["theory"], "entries": ordered,
               "verdicts": {r["label"]: r["consistency"]["verdict"] for r in ordered},
               "exact": exact}
    if main:  # config and summary together, at the end: an interrupted rerun leaves the old pair
        write_together(out, {"config.toml": dumps_toml(toml_ready(resolved)), "results.json": json_text(summary),
                             METADATA: metadata_text(compare["device"])})
        compare_plots(summary, out)
    distributed.barrier()
    return summary


def exact_scalars(action: Mapping[str, Any], entries, registry: Registry | None = None) -> dict[str, float]:
    """The action's exact values (``Action.exact``) of the scalar observables the entries measured,
    for the compare report's "exact" row; {} where the action knows none."""
    from .build import build_action

    try:
        exact = build_action(action, registry or get_registry()).exact() or {}
    except Exception:  # noqa: BLE001 - a plugin's exact results are a courtesy, never a failure
        return {}
    measured = {n for e in entries for n, o in e["observables"].items() if isinstance(o.get("value"), (int, float))}
    return {n: float(v) for n, v in exact.items()
            if n in measured and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}


def _finished(entry, action, compare, out: Path) -> dict[str, Any] | None:
    return read_finished(out / "entries" / entry["label"] / "results.json",
                         config_hash(entry_config(entry, action, compare)))


