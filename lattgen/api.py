"""The Python API: what the ``lattgen`` commands do, as functions returning typed results.

``load_config``, ``sample``, ``train``, ``compare``, ``analyse`` and ``export_pyerrors`` take a
config as a dict or a TOML path (with ``--set``-style overrides) and write the same files as the
CLI, which is a thin layer over them (lattgen/cli.py); docs/api.md has runnable examples. Results
are dataclasses: ``SampleResult`` (observables with value/error/tau_int, acceptance, times, the
run directory, the full results.json dict), ``TrainResult``, ``CompareResult``. Directories are
claimed and locked as the CLI does (``lattgen.outdir``): ``force=True`` is ``--force``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import distributed, outdir
from .errors import ConfigError, RunDirError
from .registry import Registry, get_registry

ConfigSource = Mapping[str, Any] | str | Path

#: what ``load_config`` resolves a config for
KINDS = ("sample", "train", "compare", "raw")


class ResolvedConfig(dict):
    """A config validated for one command (``kind``) with every default filled in."""

    def __init__(self, data: Mapping[str, Any], kind: str):
        super().__init__(data)
        self.kind = kind


def load_config(source: ConfigSource | None = None, overrides: Sequence[str] = (), *, kind: str = "sample",
                registry: Registry | None = None) -> dict[str, Any]:
    """A config from a dict or a TOML file with ``overrides`` ("section.key=value") applied,
    resolved for ``kind`` ("sample", "train", "compare"; "raw": not resolved). ConfigError names
    the dotted key of a bad value."""
    from .config import apply_overrides, load_toml, resolve_config

    if kind not in KINDS:
        raise ConfigError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if isinstance(source, ResolvedConfig) and source.kind == kind and not overrides:
        return source
    if source is None:
        raw: Mapping[str, Any] = {}
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raw = load_toml(source)
    raw = apply_overrides(raw, overrides)
    reg = registry or get_registry()
    if kind == "raw":
        return raw
    if kind == "compare":
        from .harness import resolve_compare

        return ResolvedConfig(resolve_compare(raw, reg), kind)
    require = ("action", "model") if kind == "train" else ("action",)
    return ResolvedConfig(resolve_config(raw, reg, require=require), kind)


# -- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObservableResult:
    """One observable's Gamma-method result: floats, or lists for a vector observable (``index``)."""

    name: str
    value: Any
    error: Any
    tau_int: Any
    tau_int_error: Any
    n_eff: Any
    reliable: bool
    index: str = ""
    index_values: tuple = ()

    @classmethod
    def from_dict(cls, name: str, entry: Mapping[str, Any]) -> ObservableResult:
        return cls(name=name, value=entry.get("value"), error=entry.get("error"), tau_int=entry.get("tau_int"),
                   tau_int_error=entry.get("tau_int_error"), n_eff=entry.get("n_eff"),
                   reliable=bool(entry.get("reliable", True)), index=entry.get("index", ""),
                   index_values=tuple(entry.get("index_values", ())))


def _observables(results: Mapping[str, Any]) -> dict[str, ObservableResult]:
    return {n: ObservableResult.from_dict(n, e) for n, e in results.get("observables", {}).items()}


@dataclass(frozen=True)
class SampleResult:
    """A sampled (or re-analysed) chain set: ``results`` is results.json as a dict."""

    observables: dict[str, ObservableResult]
    acceptance: float
    n_samples: int
    n_chains: int
    wall_time_s: float
    total_time_s: float | None
    run_dir: Path | None
    ensemble: Path | None
    config: dict[str, Any]
    results: dict[str, Any] = field(repr=False)
    #: set when a trained model samples another target than it was trained on
    note: str | None = None

    def __getitem__(self, name: str) -> ObservableResult:
        return self.observables[name]

    @classmethod
    def from_results(cls, results: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path | None,
                     ensemble: Path | None = None, note: str | None = None) -> SampleResult:
        return cls(observables=_observables(results), acceptance=results["acceptance"],
                   n_samples=results["n_samples"], n_chains=results["n_chains"],
                   wall_time_s=results["wall_time_s"], total_time_s=results.get("total_time_s"),
                   run_dir=run_dir, ensemble=ensemble, config=dict(config), results=dict(results), note=note)


@dataclass(frozen=True)
class TrainResult:
    """A training run: its directory, steps, time, why it stopped, the last metrics record."""

    run_dir: Path
    steps: int
    elapsed_s: float
    stopped_by: str
    resumed: bool
    metrics: dict[str, Any]
    config: dict[str, Any]

    def summary(self) -> str:
        return self._summary

    _summary: str = field(default="", repr=False)


@dataclass(frozen=True)
class EntryResult:
    """One compare entry: its observables, acceptance, cost figures and consistency verdict."""

    label: str
    observables: dict[str, ObservableResult]
    acceptance: float
    wall_time_s: float
    train_time_s: float | None
    performance: dict[str, Any]
    verdict: str | None


@dataclass(frozen=True)
class CompareResult:
    """A comparison: every entry by label, the verdicts, the summary (results.json) and its directory."""

    entries: dict[str, EntryResult]
    verdicts: dict[str, str]
    run_dir: Path
    summary: dict[str, Any] = field(repr=False)

    def __getitem__(self, label: str) -> EntryResult:
        return self.entries[label]


# -- output directories ----------------------------------------------------------------------
@contextlib.contextmanager
def _claimed(out: Path, command: str, force: bool):
    """The directory claimed and locked for ``command`` (as the CLI's ``--out``); released after,
    unless the caller (the CLI) already held it."""
    held = bool(distributed.run_on_main(outdir.holds, out))  # torchrun: rank 0 holds the locks
    if not held:
        outdir.claim(out, command, force)
    try:
        yield out
    finally:
        if not held:
            outdir.release(out)


# -- sample ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplePlan:
    """What ``sample`` will run: the resolved config, the trained model (RUN_DIR targets) and a
    note when that model samples another target than it was trained on."""

    config: dict[str, Any]
    model: Any = None
    trained_on: dict[str, Any] | None = None
    note: str | None = None


def prepare_sample(target: ConfigSource | SamplePlan, overrides: Sequence[str] = (),
                   registry: Registry | None = None) -> SamplePlan:
    """Resolve ``sample``'s target: a config (dict or TOML file) or a trained run directory
    (its model proposes through the registered model sampler, e.g. imh)."""
    from .config import apply_overrides

    if isinstance(target, SamplePlan):
        return target
    reg = registry or get_registry()
    model = trained_on = None
    if isinstance(target, Mapping):
        config = load_config(target, overrides, registry=reg)
    else:
        path = Path(target)
        if path.is_dir():
            from .compare_config import model_sampler
            from .rundir import load_trained

            base, _, model = load_trained(path, reg)
            proposal = model_sampler(reg)
            if proposal is None:
                raise RunDirError("no installed sampler takes a generative model (needs_model=True) to "
                                  f"sample the run directory {str(target)!r} with")
            base["sampler"] = {"name": proposal}
            trained_on = dict(base["action"])
            config = load_config(apply_overrides(base, overrides), registry=reg)
        elif path.is_file():
            config = load_config(path, overrides, registry=reg)
        else:
            raise RunDirError(f"{str(target)!r} is neither a config file nor a run directory")
    if model is not None:  # a conditional model refuses a coupling it was not trained on, before any output
        from .build import build_action
        from .conditional import condition_on

        condition_on(model, build_action(config["action"], reg))
    if model is None and "model" in config:
        raise RunDirError(f"{target}: a [model] section needs a trained model; run `lattgen train {target} "
                          "--out RUN_DIR` first, then `lattgen sample RUN_DIR`")
    note = None
    if trained_on is not None and trained_on != config["action"]:
        changed = ", ".join(f"{k} {trained_on.get(k)} -> {v}" for k, v in config["action"].items()
                            if trained_on.get(k) != v)
        from .conditional import ConditionalModel

        ranges = getattr(model, "coupling_range", {}) if isinstance(model, ConditionalModel) else {}
        moved = {k for k, v in config["action"].items() if trained_on.get(k) != v}
        if moved and all(k in ranges and ranges[k][0] <= config["action"][k] <= ranges[k][1] for k in moved):
            note = (f"note: the conditional model samples at {changed}, inside the coupling range it was "
                    "trained over")
        else:
            note = (f"note: sampling another target than the model was trained on ({changed}); exact under "
                    f"{config['sampler']['name']}, only the acceptance suffers")
    return SamplePlan(dict(config), model, trained_on, note)


def sample(target: ConfigSource | SamplePlan, overrides: Sequence[str] = (), *, out: str | Path | None = None,
           force: bool = False, save_configs: bool = False, save_every: int = 1, compress: bool = True,
           progress: Callable[[int, int], None] | None = None, registry: Registry | None = None) -> SampleResult:
    """``lattgen sample``: sample a config or a trained run directory. With ``out``, writes
    config.toml, results.json, metadata.json, primaries.npz (and ensemble.h5 with
    ``save_configs``) there, as the CLI does; without, writes nothing (``save_configs`` needs
    ``out``; ``compress=False`` stores it uncompressed)."""
    from .ensemble import ENSEMBLE
    from .sample import run_sampling

    reg = registry or get_registry()
    plan = prepare_sample(target, overrides, reg)
    config = plan.config
    if save_configs and out is None:
        raise ConfigError("save_configs: the ensemble is written into out; give an output directory")
    distributed.init(config["run"]["device"])
    with contextlib.ExitStack() as stack:
        if out is not None:
            out = stack.enter_context(_claimed(Path(out), "sample", force))
        ensemble = out / ENSEMBLE if save_configs else None
        results, chain = run_sampling(config, model=plan.model, registry=reg, progress=progress,
                                      save_configs=ensemble, save_every=save_every, compress=compress)
        if plan.trained_on is not None:
            results["training_action"] = plan.trained_on  # beside "action", the target sampled
        if out is not None:
            write_run_files(out, config, results, chain)
    return SampleResult.from_results(results, config, out, ensemble, plan.note)


def write_run_files(out: Path, config: Mapping[str, Any], results: Mapping[str, Any], chain) -> None:
    """config.toml, results.json, metadata.json and primaries.npz of a sample or analyse run as one
    change (rank 0 only): an interruption leaves the old set."""
    from .config import dumps_toml
    from .export import PRIMARIES, primaries_npz
    from .jsonio import json_text
    from .metadata import METADATA

    if distributed.is_main():
        outdir.write_together(out, {"config.toml": dumps_toml(config), "results.json": json_text(results),
                                    METADATA: json_text(results["metadata"]),
                                    PRIMARIES: primaries_npz(chain)})


# -- analyse ---------------------------------------------------------------------------------
def analyse(ensemble: str | Path, observables: Sequence[str] | None = None, *, out: str | Path | None = None,
            force: bool = False, progress: Callable[[int, int], None] | None = None,
            registry: Registry | None = None) -> SampleResult:
    """``lattgen analyse``: measure ``observables`` (default: the run's) on a saved ensemble with the
    same Gamma method; with ``out``, writes the same files as ``sample`` there. The ensemble is
    opened read-only; bad files are one EnsembleError."""
    from .reanalysis import analyse_ensemble, open_checked

    reg = registry or get_registry()
    open_checked(ensemble, observables, reg)[0].close()  # bad input fails before out is created
    with contextlib.ExitStack() as stack:
        if out is not None:
            out = stack.enter_context(_claimed(Path(out), "analyse", force))
        results, chain = analyse_ensemble(ensemble, observables, registry=reg, progress=progress)
        config = {k: results[k] for k in ("action", "sampler", "run", "model") if k in results}
        if out is not None:
            write_run_files(out, config, results, chain)
    return SampleResult.from_results(results, config, out, Path(ensemble))


# -- train -----------------------------------------------------------------------------------
def train(config: ConfigSource, overrides: Sequence[str] = (), *, out: str | Path,
          init_from: str | Path | None = None, force: bool = False,
          progress: Callable[..., None] | None = None, registry: Registry | None = None) -> TrainResult:
    """``lattgen train``: train the [model] on the [action] into the run directory ``out`` (resumes
    a checkpoint there unless ``force``); ``init_from`` a trained RUN_DIR initialises the weights."""
    from .rundir import train_run

    reg = registry or get_registry()
    resolved = load_config(config, overrides, kind="train", registry=reg)
    distributed.init(resolved["run"]["device"])
    with _claimed(Path(out), "train", force) as run_dir:
        result = train_run(resolved, run_dir, registry=reg, progress=progress, init_from=init_from,
                           resume=not force)
    return TrainResult(run_dir=Path(out), steps=result.step, elapsed_s=result.elapsed_s,
                       stopped_by=result.stopped_by, resumed=result.resumed, metrics=dict(result.metrics),
                       config=dict(resolved), _summary=result.summary())


# -- compare ---------------------------------------------------------------------------------
def compare(config: ConfigSource | None = None, overrides: Sequence[str] = (), *, out: str | Path,
            force: bool = False, progress: Callable[..., None] | None = None,
            registry: Registry | None = None) -> CompareResult:
    """``lattgen compare``: every entry on equal terms into ``out`` (a rerun resumes finished entries)."""
    from .harness import run_compare

    reg = registry
    resolved = load_config(config, overrides, kind="compare", registry=reg)
    distributed.init(resolved["compare"]["device"])
    with _claimed(Path(out), "compare", force) as run_dir:
        summary = run_compare(resolved, run_dir, registry=reg, progress=progress)
    entries = {e["label"]: EntryResult(
        label=e["label"], observables=_observables(e), acceptance=e["acceptance"], wall_time_s=e["wall_time_s"],
        train_time_s=(e.get("training") or {}).get("train_time_s"), performance=dict(e.get("performance", {})),
        verdict=summary["verdicts"].get(e["label"])) for e in summary["entries"]}
    return CompareResult(entries=entries, verdicts=dict(summary["verdicts"]), run_dir=Path(out), summary=summary)


# -- export ----------------------------------------------------------------------------------
def export_pyerrors(results: str | Path, out: str | Path | None = None,
                    registry: Registry | None = None) -> Path:
    """``lattgen export --pyerrors``: the results (results.json or its directory; sample, analyse or
    compare) as a pyerrors json.gz file; returns its path."""
    from .export import export_pyerrors as _export

    return _export(results, out, registry)
