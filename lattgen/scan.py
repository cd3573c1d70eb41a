"""`lattgen scan`: one action sampled at a list or grid of coupling values, by several methods.

``[scan]`` names the couplings to vary (the action's ``Param(coupling=True)``), each a list of
values or ``{start, stop, num}``; several give their product grid. Each ``[[entries]]`` is

* a conditional model (a ``ConditionalModel``: ``model = {name = ...}``) trained ONCE inside the
  scan over the scan's box (or its own ``couplings``), or ``run_dir = "..."``, a trained one;
  its training time is amortised over the points;
* any other model, trained at every point (``per_point``);
* a classical sampler (no model).

Every (point, entry) is sampled with the same n_samples and analysed by the same code
(``lattgen.sample``); its results.json under ``OUT/points/<point>/<label>/`` marks it done, so a
rerun skips it (resumable). The cost of an entry at a point is the sampling time to the target
relative error on the theory's figure of merit, t_therm + t_sample (rel / target)^2; the total
of an entry adds its training once (conditional) or per point. Writes OUT/results.json and
OUT/scan.png (observables, acceptance and tau_int against the coupling).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import distributed
from .compare_config import config_hash, entry_config, model_sampler
from .config import resolve_action, resolve_component, resolve_run, resolve_train
from .errors import ConfigError, LattgenError
from .jsonio import read_finished
from .params import Param, reject_unknown, validate_params
from .plots import styled
from .registry import Registry, get_registry

SCAN_PARAMS: tuple[Param, ...] = (
    Param("n_samples", "int", 4096, "measured configurations per point and entry, all chains together", min=2),
    Param("n_therm", "int", None, "thermalisation steps per chain (default: run_chain's rule)", min=0,
          nullable=True),
    Param("seed", "int", 0, "seed shared by every point and entry", min=0),
    Param("device", "str", "cpu", "torch device"),
    Param("threads", "int", 1, "torch threads", min=1),
    Param("observables", "list[str]", None, "observables (default: the theory's)", nullable=True),
    Param("train_time_s", "float", 120.0, "training budget of a model trained in the scan (a conditional "
          "model once, a per-point model at every point)", min=0, min_exclusive=True, nullable=True),
    Param("train_steps", "int", None, "training step budget of a model trained in the scan", min=1,
          nullable=True),
    Param("target_rel_error", "float", 0.01, "relative error on the theory's figure of merit for the cost "
          "column", min=0, min_exclusive=True),
)
ENTRY_KEYS = ("label", "model", "sampler", "train", "run_dir")
#: the scanned couplings of a [scan] section are its keys that are not SCAN_PARAMS
SCAN_KEYS = tuple(p.name for p in SCAN_PARAMS)


# -- configuration ------------------------------------------------------------------------------
def coupling_values(name: str, spec: Any, param: Param) -> list[float]:
    """The values of one scanned coupling: a list, or {start, stop, num} (inclusive), each checked
    against the coupling's valid domain."""
    where = f"scan.{name}"
    if isinstance(spec, Mapping):
        reject_unknown(spec, ("start", "stop", "num"), where)
        for key in ("start", "stop", "num"):
            if key not in spec:
                raise ConfigError(f"{where}.{key}: required key is missing ({{start, stop, num}})")
        num = Param("num", "int", min=1).validate(spec["num"], f"{where}.num")
        start = Param("start", "float").validate(spec["start"], f"{where}.start")
        stop = Param("stop", "float").validate(spec["stop"], f"{where}.stop")
        values = [float(v) for v in np.linspace(start, stop, num)]
    elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        values = Param(name, "list[float]").validate(list(spec), where)
    else:
        raise ConfigError(f"{where}: expected a list of values or {{start, stop, num}}, got {spec!r}")
    if not values:
        raise ConfigError(f"{where}: the scan is empty; give at least one value")
    for i, v in enumerate(values):
        param.validate(v, f"{where}[{i}]")  # the coupling's valid domain
    return [round(v, 12) for v in values]


def point_tag(point: Mapping[str, float]) -> str:
    """Directory name of a point, e.g. beta0.55_lam0.5."""
    return "_".join(f"{k}{v:.6g}" for k, v in point.items())


def resolve_scan(raw: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Validate [action], [scan], [[entries]]: the points, and every entry's kind and settings."""
    reg = registry or get_registry()
    reject_unknown(raw, ("action", "scan", "entries"), what="section")
    if "action" not in raw or not isinstance(raw["action"], Mapping):
        raise ConfigError("[action]: required section is missing (the action to scan)")
    sec = raw.get("scan")
    if not isinstance(sec, Mapping):
        raise ConfigError("[scan]: required section is missing; give the couplings to scan, for example "
                          "beta = [0.55, 0.6] or beta = {start = 0.55, stop = 0.7, num = 8}")
    spec = reg.get("action", raw["action"].get("name")) if isinstance(raw["action"].get("name"), str) else None
    if spec is None:
        raise ConfigError("action.name: required key is missing")
    couplings = spec.couplings()
    scanned = [k for k in sec if k not in SCAN_KEYS]
    for k in scanned:
        if k not in couplings:
            raise ConfigError(f"scan.{k}: unknown coupling of action {spec.name!r}; its couplings are: "
                              f"{', '.join(couplings) or '(none)'} (other [scan] keys: {', '.join(SCAN_KEYS)})")
    if not scanned:
        raise ConfigError(f"[scan]: the scan is empty; give at least one coupling of {spec.name!r} to scan "
                          f"({', '.join(couplings) or 'it has none'})")
    values = {k: coupling_values(k, sec[k], couplings[k]) for k in scanned}
    scan = validate_params(SCAN_PARAMS, {k: v for k, v in sec.items() if k in SCAN_KEYS}, "scan")
    if scan["train_time_s"] is None and scan["train_steps"] is None:
        raise ConfigError("scan.train_time_s: set train_time_s and/or train_steps (the training budget)")
    resolve_run(reg, {"device": scan["device"], "observables": scan["observables"]})
    points = [dict(zip(scanned, combo)) for combo in itertools.product(*values.values())]
    actions = []
    for p in points:
        try:
            actions.append(resolve_action(reg, {**raw["action"], **p}))
            from .build import build_action

            build_action(actions[-1], reg)  # e.g. a free field past its critical point
        except LattgenError as exc:
            raise ConfigError(f"scan point {point_tag(p)}: {exc}") from None
    box = {k: (min(v), max(v)) for k, v in values.items()}
    centre = resolve_action(reg, {**raw["action"], **{k: 0.5 * (lo + hi) for k, (lo, hi) in box.items()}})
    raw_entries = raw.get("entries")
    if raw_entries is None:
        raw_entries = [{"label": s, "sampler": {"name": s}} for s in reg.theory(spec.name).classical_samplers
                       if s in reg.names("sampler")]
    if not isinstance(raw_entries, Sequence) or isinstance(raw_entries, (str, bytes)) or not raw_entries:
        raise ConfigError("entries: must be a non-empty list of tables ([[entries]])")
    entries, labels = [], set()
    for i, e in enumerate(raw_entries):
        entry = _resolve_entry(reg, e, f"entries[{i}]", scan, box, centre)
        if entry["label"] in labels:
            raise ConfigError(f"entries[{i}].label: {entry['label']!r} is used twice; give each entry its own label")
        labels.add(entry["label"])
        entries.append(entry)
    theory = reg.theory(spec.name)
    return {"scan": scan, "couplings": values, "points": points, "actions": actions, "centre": centre,
            "entries": entries, "figure_of_merit": theory.figure_of_merit,
            "headline": list(theory.headline)}


def _resolve_entry(reg: Registry, e: Any, where: str, scan: Mapping[str, Any], box, centre) -> dict[str, Any]:
    if not isinstance(e, Mapping):
        raise ConfigError(f"{where}: must be a table with keys {', '.join(ENTRY_KEYS)}")
    reject_unknown(e, ENTRY_KEYS, where)
    if "model" in e and "run_dir" in e:
        raise ConfigError(f"{where}: give model (trained in the scan) or run_dir (trained already), not both")
    entry: dict[str, Any] = {}
    has_model = "model" in e or "run_dir" in e
    if "model" in e:
        if not isinstance(e["model"], Mapping):
            raise ConfigError(f"{where}.model: must be a table")
        model = dict(e["model"])
        entry["kind"] = "conditional" if _is_conditional(reg, model, centre, f"{where}.model") else "per_point"
        if entry["kind"] == "conditional" and "couplings" not in model:
            model["couplings"] = {k: list(v) for k, v in box.items()}  # the scan's box
        entry["model"] = resolve_component(reg, "model", model, f"{where}.model")
        train = {"max_time_s": scan["train_time_s"], "max_steps": scan["train_steps"], "threads": scan["threads"]}
        if not isinstance(e.get("train", {}), Mapping):
            raise ConfigError(f"{where}.train: must be a table")
        train.update(e.get("train", {}))
        entry["train"] = resolve_train(train, f"{where}.train")
    elif "run_dir" in e:
        if not isinstance(e["run_dir"], str):
            raise ConfigError(f"{where}.run_dir: expected the path of a trained run directory")
        entry["kind"] = "run_dir"
        entry["run_dir"] = e["run_dir"]
    else:
        if "train" in e:
            raise ConfigError(f"{where}.train: only an entry with a model is trained")
        entry["kind"] = "classical"
    sampler = e.get("sampler", {})
    if not isinstance(sampler, Mapping):
        raise ConfigError(f"{where}.sampler: must be a table")
    entry["sampler"] = resolve_component(reg, "sampler", sampler, f"{where}.sampler",
                                         default=model_sampler(reg) if has_model else None)
    label = e.get("label") or (entry.get("model", {}).get("name") or
                               (Path(entry["run_dir"]).name if "run_dir" in entry else entry["sampler"]["name"]))
    if not isinstance(label, str) or not label.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"{where}.label: {label!r} must be letters, digits, '-', '_' or '.'")
    entry["label"] = label
    return entry


def _is_conditional(reg: Registry, model: Mapping[str, Any], centre: Mapping[str, Any], where: str) -> bool:
    """Whether the model named in ``model`` is a ConditionalModel (built once, at the centre)."""
    from .build import build_action, build_model
    from .conditional import ConditionalModel

    probe = {k: v for k, v in model.items() if k != "couplings"}
    try:
        built = build_model(probe, build_action(centre, reg), reg)
    except LattgenError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return isinstance(built, ConditionalModel)


# -- running ------------------------------------------------------------------------------------
def _sample_config(entry: Mapping[str, Any], action: Mapping[str, Any], scan: Mapping[str, Any]) -> dict:
    compare = {"n_samples": scan["n_samples"], "n_therm": scan["n_therm"], "seed": scan["seed"],
               "device": scan["device"], "observables": scan["observables"]}
    cfg = entry_config({"sampler": entry["sampler"]}, action, compare)
    if "model" in entry:
        cfg["model"], cfg["train"] = dict(entry["model"]), dict(entry["train"])
    if "run_dir" in entry:
        cfg["run_dir"] = str(Path(entry["run_dir"]).resolve())
    return cfg


def _train(cfg: Mapping[str, Any], out: Path, registry: Registry, progress, label: str):
    """Train (or resume) a model into ``out``; (model, training seconds from metrics.jsonl)."""
    from .checkpoints import METRICS, read_metrics
    from .rundir import load_trained, train_run

    def train_progress(done, total, metrics=None):
        if progress:
            progress(label, "train", done, total)

    train_run(dict(cfg), out, registry=registry, progress=train_progress, resume=True)
    _, _, model = load_trained(out, registry)
    curve = read_metrics(out / METRICS)
    return model, (curve[-1].get("time", 0.0) if curve else 0.0)


def _load_run_dir(entry: Mapping[str, Any], resolved: Mapping[str, Any], registry: Registry):
    """The trained ConditionalModel of a run_dir entry, moved to the scan's lattice, checked at every point."""
    from .checkpoints import METRICS, read_metrics
    from .conditional import ConditionalModel
    from .lattice import Lattice
    from .rundir import load_trained

    _, _, model = load_trained(entry["run_dir"], registry)
    where = f"entries {entry['label']!r} run_dir {entry['run_dir']}"
    if not isinstance(model, ConditionalModel):
        raise ConfigError(f"{where}: holds a {type(model).__name__}, not a conditional model; scan with "
                          "a conditional model (for example conditional_multigrid) or give [[entries]] model")
    lattice = Lattice(resolved["centre"]["lattice"])
    if model.lattice != lattice:
        if not hasattr(model, "relattice"):
            raise ConfigError(f"{where}: trained on lattice {list(model.lattice.shape)}, the scan is on "
                              f"{list(lattice.shape)}")
        model.relattice(lattice)
    for action in resolved["actions"]:  # a coupling it was not conditioned on: refused up front
        from .build import build_action

        try:
            model.condition(build_action(action, registry).couplings())
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    curve = read_metrics(Path(entry["run_dir"]) / METRICS)
    return model, (curve[-1].get("time", 0.0) if curve else 0.0)


def cost_to_target(results: Mapping[str, Any], fom: str | None, target: float) -> float | None:
    """Sampling seconds to relative error ``target`` on the figure of merit: t_therm + t (rel/target)^2."""
    o = results["observables"].get(fom, {}) if fom else {}
    value, err, wall = o.get("value"), o.get("error"), results.get("wall_time_s", 0.0)
    if not value or not err or not wall or not (math.isfinite(value) and math.isfinite(err)):
        return None
    return results.get("therm_time_s", 0.0) + wall * (abs(err / value) / target) ** 2


def run_scan(resolved: Mapping[str, Any], out_dir: str | Path, registry: Registry | None = None,
             progress: Callable | None = None) -> dict[str, Any]:
    """Train what is trained once, sample every (point, entry) not done yet; write results.json, scan.png."""
    import torch

    from .build import build_action
    from .config import dumps_toml
    from .jsonio import json_text
    from .outdir import write_together
    from .sample import run_sampling

    reg = registry or get_registry()
    out = Path(out_dir)
    main = distributed.is_main()
    scan = resolved["scan"]
    torch.set_num_threads(scan["threads"])
    fom = resolved["figure_of_merit"]
    rows: list[dict[str, Any]] = []
    totals: dict[str, dict[str, Any]] = {}
    for entry in resolved["entries"]:
        label = entry["label"]
        model, train_s = None, 0.0
        if entry["kind"] == "conditional":
            cfg = {**_sample_config(entry, resolved["centre"], scan)}
            cfg.pop("sampler")
            model, train_s = _train(cfg, out / "train" / label, reg, progress, label)
        elif entry["kind"] == "run_dir":
            model, train_s = _load_run_dir(entry, resolved, reg)
        total = {"label": label, "kind": entry["kind"], "train_time_s": train_s, "sample_cost_s": 0.0,
                 "points": 0, "complete": True}
        for point, action in zip(resolved["points"], resolved["actions"]):
            cfg = _sample_config(entry, action, scan)
            cfg_hash = config_hash(cfg)
            where = out / "points" / point_tag(point) / label
            res = distributed.run_on_main(read_finished, where / "results.json", cfg_hash)
            if res is None:
                point_model, point_train_s = model, None
                if entry["kind"] == "per_point":
                    point_model, point_train_s = _train(cfg, where / "train", reg, progress, label)
                t0 = time.perf_counter()
                tag = point_tag(point)

                def sample_progress(done, total_, _label=label, _tag=tag):
                    if progress:
                        progress(_label, f"sample {_tag}", done, total_)

                res, _ = run_sampling({k: v for k, v in cfg.items() if k != "run_dir"}, model=point_model,
                                      registry=reg, progress=sample_progress,
                                      action=build_action(action, reg))
                res["label"], res["config_hash"], res["point"] = label, cfg_hash, dict(point)
                res["train_time_s"] = point_train_s
                res["scan_wall_s"] = time.perf_counter() - t0
                if main:
                    where.mkdir(parents=True, exist_ok=True)
                    write_together(where, {"config.toml": dumps_toml({k: v for k, v in cfg.items()}),
                                           "results.json": json_text(res)})
            row = _row(res, point, label, entry["kind"], fom, scan["target_rel_error"], resolved["headline"])
            rows.append(row)
            total["points"] += 1
            if entry["kind"] == "per_point":
                total["train_time_s"] += row["train_time_s"] or 0.0
            if row["cost_s"] is None:
                total["complete"] = False
            else:
                total["sample_cost_s"] += row["cost_s"]
        total["total_cost_s"] = total["train_time_s"] + total["sample_cost_s"]
        total["per_point_s"] = total["total_cost_s"] / max(total["points"], 1)
        totals[label] = total
    result = {"scan": dict(scan), "couplings": resolved["couplings"], "figure_of_merit": fom,
              "headline": resolved["headline"], "rows": rows, "totals": list(totals.values())}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_together(out, {"results.json": json_text(result)})
        plot_scan(result, out)
    distributed.barrier()
    return result


def _row(res: Mapping[str, Any], point, label: str, kind: str, fom, target: float, headline) -> dict[str, Any]:
    obs = res["observables"]
    row = {**{k: v for k, v in point.items()}, "label": label, "kind": kind,
           "acceptance": res.get("acceptance"), "n_samples": res.get("n_samples"),
           "sample_time_s": res.get("wall_time_s"), "therm_time_s": res.get("therm_time_s"),
           "train_time_s": res.get("train_time_s"), "cost_s": cost_to_target(res, fom, target)}
    for name in dict.fromkeys([*headline, *([fom] if fom else []), *obs]):
        o = obs.get(name)
        if not isinstance(o, Mapping):
            continue
        for key in ("value", "error", "tau_int", "tau_int_error", "n_eff"):
            if isinstance(o.get(key), (int, float)):
                row[f"{name}_{key}" if key != "value" else name] = o[key]
        for key, v in o.items():  # chain statistics (for example sign flips) of an observable
            if key.startswith("chain_") and isinstance(v, (int, float)):
                row[f"{name}_{key[6:]}"] = v
    return row


@styled
def plot_scan(result: Mapping[str, Any], out: Path) -> Path:
    """Headline observables, acceptance and tau_int(F) against the first scanned coupling, one line
    per entry (and per value of any other scanned coupling), in the shared style of lattgen.plots."""
    from .plots import pyplot, save_figure

    plt = pyplot()
    names = list(result["couplings"])
    x_name, others = names[0], names[1:]
    obs = [o for o in result["headline"] if any(o in r for r in result["rows"])]
    panels = [*obs, "acceptance", "tau_int"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    axes = np.atleast_1d(axes)
    fom = result["figure_of_merit"]
    groups: dict[tuple, list] = {}
    for r in result["rows"]:
        groups.setdefault((r["label"], *(r[o] for o in others)), []).append(r)
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[x_name])
        x = np.array([r[x_name] for r in rs], dtype=float)
        name = key[0] + "".join(f", {o} = {v:g}" for o, v in zip(others, key[1:]))
        for ax, panel in zip(axes, panels):
            if panel == "acceptance":
                y, dy = [r.get("acceptance") for r in rs], None
            elif panel == "tau_int":
                y, dy = [r.get(f"{fom}_tau_int") for r in rs], [r.get(f"{fom}_tau_int_error") for r in rs]
            else:
                y, dy = [r.get(panel) for r in rs], [r.get(f"{panel}_error") for r in rs]
            y = np.array([v if v is not None else np.nan for v in y], dtype=float)
            err = None if dy is None else np.array([v if v is not None else 0 for v in dy], dtype=float)
            ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label=name, ms=4)
    for ax, panel in zip(axes, panels):
        ax.set_xlabel(x_name)
        ax.set_ylabel(panel if panel != "tau_int" else f"tau_int({fom}) [Markov steps]")
        if panel == "tau_int":
            ax.set_yscale("log")
        if panel == "acceptance":
            ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"scan over {', '.join(names)}")
    return save_figure(fig, out / "scan.png")
