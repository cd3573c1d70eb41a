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

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed
from .config import TRAIN_PARAMS, resolve_action, resolve_component, resolve_run
from .errors import ConfigError
from .params import Param, reject_unknown, validate_params
from .registry import Registry, get_registry
from .theory import Theory

COMPARE_PARAMS: tuple[Param, ...] = (
    Param("train_time_s", "float", 75.0, "training wall-time budget of every model entry", min=0,
          min_exclusive=True, nullable=True),
    Param("train_steps", "int", None, "training step budget of every model entry", min=1, nullable=True),
    Param("n_samples", "int", 16384, "measured configurations per entry, all chains together", min=2),
    Param("n_therm", "int", None, "thermalisation steps per chain (default: run_chain's rule)", min=0,
          nullable=True),
    Param("seed", "int", 0, "seed shared by every entry", min=0),
    Param("device", "str", "cpu", "torch device of every entry"),
    Param("workers", "int", None, "entries run in parallel (default: min(cores, 2))", min=1, nullable=True),
    Param("threads", "int", 1, "torch threads per worker", min=1),
    Param("observables", "list[str]", None, "observables (default: all registered)", nullable=True),
    Param("data_samples", "int", 4096, "HMC configurations generated (inside the training budget) "
          "for models that train on data, e.g. the VAE", min=2),
    Param("sigma", "float", 3.0, "pulls beyond this many sigma are flagged inconsistent", min=0,
          min_exclusive=True),
    Param("target_rel_error", "float", 0.01, "relative error on the theory's figure of merit for the "
          "time-to-precision column",
          min=0, min_exclusive=True),
)

ENTRY_KEYS = ("label", "model", "sampler", "train")


def default_entries(registry: Registry, action: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every model family registered for the action's field space with the model sampler, plus
    the theory's classical samplers."""
    from .build import build_action

    space = build_action(action, registry).field_space
    proposal = model_sampler(registry)
    models = registry.for_field("model", space) if proposal is not None else []
    entries = [{"label": name, "model": {"name": name}, "sampler": {"name": proposal}}
               for name in models if registry.get("model", name).meta.get("compare", True)]
    entries += [{"label": s, "sampler": {"name": s}}
                for s in registry.theory(action["name"]).classical_samplers if s in registry.names("sampler")]
    return entries


def model_sampler(registry: Registry) -> str | None:
    """The default sampler of an entry with a model: the first registered with ``needs_model``."""
    names = registry.model_samplers()
    return names[0] if names else None


def resolve_compare(raw: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Validate a compare config: [action], [compare], [[entries]]; fill the built-in defaults."""
    reg = registry or get_registry()
    reject_unknown(raw, ("action", "compare", "entries", "scale"), what="section")
    action = resolve_action(reg, raw["action"] if "action" in raw else reg.default_action())
    sec = raw.get("compare", {})
    if not isinstance(sec, Mapping):
        raise ConfigError("compare: must be a table ([compare])")
    compare = validate_params(COMPARE_PARAMS, sec, "compare")
    if compare["train_time_s"] is None and compare["train_steps"] is None:
        raise ConfigError("compare.train_time_s: set train_time_s and/or train_steps (the training budget)")
    resolve_run(reg, {"device": compare["device"], "observables": compare["observables"]})
    raw_entries = raw.get("entries", None)
    if raw_entries is None:
        raw_entries = default_entries(reg, action)
    if not isinstance(raw_entries, Sequence) or isinstance(raw_entries, (str, bytes)) or not raw_entries:
        raise ConfigError("entries: must be a non-empty list of tables ([[entries]])")
    entries, labels = [], set()
    for i, e in enumerate(raw_entries):
        where = f"entries[{i}]"
        if not isinstance(e, Mapping):
            raise ConfigError(f"{where}: must be a table with keys {', '.join(ENTRY_KEYS)}")
        reject_unknown(e, ENTRY_KEYS, where)
        entry: dict[str, Any] = {}
        if "model" in e:
            entry["model"] = resolve_component(reg, "model", _table(e["model"], f"{where}.model"), f"{where}.model")
        entry["sampler"] = resolve_component(reg, "sampler", _table(e.get("sampler", {}), f"{where}.sampler"),
                                             f"{where}.sampler", default=model_sampler(reg) if "model" in entry else None)
        if "model" in entry:
            train = {"max_time_s": compare["train_time_s"], "max_steps": compare["train_steps"],
                     "threads": compare["threads"]}
            train.update(_table(e.get("train", {}), f"{where}.train"))
            entry["train"] = validate_params(TRAIN_PARAMS, train, f"{where}.train")
        elif "train" in e:
            raise ConfigError(f"{where}.train: only an entry with a model is trained")
        label = e.get("label") or (entry["model"]["name"] if "model" in entry else entry["sampler"]["name"])
        if not isinstance(label, str) or not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"{where}.label: {label!r} must be letters, digits, '-', '_' or '.'")
        if label in labels:
            raise ConfigError(f"{where}.label: {label!r} is used twice; give each entry its own label")
        labels.add(label)
        entry["label"] = label
        entries.append(entry)
    return {"action": action, "compare": compare, "theory": theory_summary(reg.theory(action["name"])),
            "entries": entries}


def _table(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: must be a table")
    return dict(obj)


def entry_config(entry: Mapping[str, Any], action: Mapping[str, Any], compare: Mapping[str, Any]) -> dict[str, Any]:
    """The single-run config (action, model, train, sampler, run) of one entry."""
    run = {"n_samples": compare["n_samples"], "n_therm": compare["n_therm"], "measure_every": 1,
           "seed": compare["seed"], "device": compare["device"], "dtype": "float64",
           "observables": compare["observables"]}
    cfg = {"action": dict(action), "sampler": dict(entry["sampler"]), "run": run}
    if "model" in entry:
        cfg["model"] = dict(entry["model"])
        cfg["train"] = dict(entry["train"])
    return cfg


def config_hash(cfg: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


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

    from .config import write_toml
    from .report import write_json
    from .sample import run_sampling

    torch.set_num_threads(compare["threads"])
    reg = registry or get_registry()
    out = Path(out_dir)
    main = distributed.is_main()
    cfg = entry_config(entry, action, compare)
    cfg_hash = config_hash(cfg)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_toml(cfg, out / "config.toml")
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
    if main:
        np.savez_compressed(out / "plotdata.npz", **plot_arrays(chain, theory.histogram))
        write_json(results, out / "results.json")
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
    curve = []
    path = train_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                curve.append(json.loads(line))
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


# -- consistency --------------------------------------------------------------------------------
def consistency(entries: Sequence[Mapping[str, Any]], sigma: float) -> dict[str, dict[str, Any]]:
    """Pull of each entry against the pooled estimate of the reference (exact) samplers.

    The reference is every entry without a model — classical samplers, exact by construction —
    leaving the entry itself out (a lone classical entry gets no pull); without any classical
    entry, all other entries. The pool is the
    inverse-variance weighted mean, pull = (x_i - x_pool) / sqrt(err_i^2 + err_pool^2), and
    |pull| > sigma flags the entry inconsistent: its sampler (or its model's density) is not exact.
    Except where the entry's own error is unreliable (``reliable`` False: the Gamma window failed,
    the chains are too short for their autocorrelation, the error is an underestimate): such a
    pull cannot be judged and is listed under ``too_short`` instead; ``verdict`` is "yes",
    "NO" or "too short" (a too-short pull and no judged failure).
    """
    names: list[str] = []
    for e in entries:
        for name, o in e["observables"].items():
            if isinstance(o.get("value"), (int, float)) and name not in names:
                names.append(name)
    reference = {e["label"] for e in entries if not e.get("model")}
    out: dict[str, dict[str, Any]] = {e["label"]: {"pulls": {}, "consistent": True, "too_short": []}
                                      for e in entries}
    reliable = {(e["label"], name): o.get("reliable", True) is not False
                for e in entries for name, o in e["observables"].items()}
    for name in names:
        vals = {}
        for e in entries:
            o = e["observables"].get(name, {})
            v, s = o.get("value"), o.get("error")
            if isinstance(v, (int, float)) and isinstance(s, (int, float)) and s > 0 and math.isfinite(v):
                vals[e["label"]] = (v, s)
        for label, (v, s) in vals.items():
            if reference:
                # a lone reference sampler defines the reference: nothing exact to test it against
                others = [vals[k] for k in vals if k in reference and k != label]
            else:
                others = [vals[k] for k in vals if k != label]
            if not others:
                continue
            w = np.array([1 / sx**2 for _, sx in others])
            pool = float(np.sum(w * np.array([x for x, _ in others])) / w.sum())
            pool_err = float(1 / math.sqrt(w.sum()))
            pull = (v - pool) / math.sqrt(s**2 + pool_err**2)
            out[label]["pulls"][name] = pull
            if abs(pull) > sigma:
                if reliable[(label, name)]:
                    out[label]["consistent"] = False
                else:
                    out[label]["too_short"].append(name)
    for judged in out.values():
        judged["verdict"] = "NO" if not judged["consistent"] else "too short" if judged["too_short"] else "yes"
    return out


# -- the whole comparison ---------------------------------------------------------------------
def run_compare(
    resolved: Mapping[str, Any],
    out_dir: str | Path,
    registry: Registry | None = None,
    progress: Callable[[str, str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) every entry; write OUT/results.json and plots; return the summary."""
    from .config import write_toml
    from .plots import compare_plots
    from .report import write_json

    out = Path(out_dir)
    main = distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_toml(_toml_ready(resolved), out / "config.toml")
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
        results.update(_run_parallel(todo, action, compare, out, workers, progress))
    ordered = [results[e["label"]] for e in resolved["entries"]]
    cons = consistency(ordered, compare["sigma"])
    for r in ordered:
        r["consistency"] = cons[r["label"]]
    summary = {"action": action, "compare": compare, "theory": resolved["theory"], "entries": ordered}
    if main:
        write_json(summary, out / "results.json")
        compare_plots(summary, out)
    distributed.barrier()
    return summary


def theory_summary(theory: Theory) -> dict[str, Any]:
    """What the report and plots need of the theory, recorded in the compare results.json."""
    return {"headline": list(theory.headline), "figure_of_merit": theory.figure_of_merit,
            "histogram": theory.histogram, "histogram_label": theory.histogram_label}


def _toml_ready(resolved: Mapping[str, Any]) -> dict[str, Any]:
    return {"action": resolved["action"], "compare": resolved["compare"],
            "entries": [dict(e) for e in resolved["entries"]]}


def _finished(entry, action, compare, out: Path) -> dict[str, Any] | None:
    path = out / "entries" / entry["label"] / "results.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return res if res.get("config_hash") == config_hash(entry_config(entry, action, compare)) else None


def _worker(args):
    entry, action, compare, out, queue = args

    def progress(label, phase, done, total):
        queue.put((label, phase, done, total))

    return entry["label"], run_entry(entry, action, compare, out, progress=progress)


def _run_parallel(todo, action, compare, out: Path, workers: int, progress) -> dict[str, dict[str, Any]]:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # idle OpenMP threads busy-wait by default and starve the other worker on a small machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    q = manager.Queue()
    results: dict[str, dict[str, Any]] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        pending = {pool.submit(_worker, (e, action, compare, out / "entries" / e["label"], q)) for e in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(q, progress, queue_mod)
            for fut in finished:
                label, res = fut.result()
                results[label] = res
        _drain(q, progress, queue_mod)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        manager.shutdown()
    return results


def _drain(q, progress, queue_mod) -> None:
    while True:
        try:
            msg = q.get_nowait()
        except queue_mod.Empty:
            return
        if progress:
            progress(*msg)
