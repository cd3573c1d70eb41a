"""Configuration of `lattgen compare`: [compare] parameters, the entries, their single-run configs.

Validates a compare config once ([action], [compare], [[entries]], each entry's [train] through
``lattgen.config.resolve_train``) and fills the defaults from the action's theory: the default
point, the model sampler for model entries, the classical samplers (``lattgen.theory``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .config import resolve_action, resolve_component, resolve_run, resolve_train
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
            entry["train"] = resolve_train(train, f"{where}.train")
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


def theory_summary(theory: Theory) -> dict[str, Any]:
    """What the report and plots need of the theory, recorded in the compare results.json."""
    return {"headline": list(theory.headline), "figure_of_merit": theory.figure_of_merit,
            "histogram": theory.histogram, "histogram_label": theory.histogram_label}


def toml_ready(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved compare config as written to OUT/config.toml."""
    return {"action": resolved["action"], "compare": resolved["compare"],
            "entries": [dict(e) for e in resolved["entries"]]}
