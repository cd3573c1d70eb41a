"""``lattgen export --pyerrors``: results in pyerrors' JSON format (json.gz), one Obs per observable.

pyerrors (F. Joswig, S. Kuberski, J. T. Kuhlmann, J. Neuendorf, arXiv:2209.14371) stores an
``Obs`` as its value and, per Monte Carlo ensemble and replica, the fluctuations of every
configuration (``[[config, delta], ...]``, deltas about the Obs' value; file format 1.1 of
``pyerrors.input.json``). lattgen writes that format itself (pyerrors is not needed to export):

* ensemble: one per run (``<action>_<lattice>_<sampler>_s<seed>_<hash of the config>``; a compare
  entry adds its label), so Obs of one run correlate in pyerrors and different runs do not;
* replicas: the chains (``ENSEMBLE|r0``, ``|r1``, ...), configurations numbered by the run's
  measurement index 1..n_steps (1, 1 + K, ... for ``lattgen analyse`` of an ensemble saved
  ``--save-every K``: the same ensemble id, so pyerrors lines both up);
* a scalar observable is an ``Obs``, a vector one a ``List`` of its components (tag
  ``name[index=value]``); its deltas are lattgen's linearised fluctuations
  d_F = grad F . (a - A) of the saved per-configuration primaries (``primaries.npz``), and its
  value lattgen's value (replica-bias corrected as in results.json).

pyerrors then reproduces value, error and tau_int (``obs.gamma_method(S=1.5)``, lattgen's S):
the value exactly, error and tau_int within the windowing difference of docs/ensembles.md
(pyerrors subtracts each replica's own mean without the bias correction of Gamma(t), a relative
difference of about R (2W + 1)/N). Components that are not finite (e.g. an undefined
correlation length) are left out and listed in the file's description.
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import io
import json
import platform
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .analysis import _single_primary, projected_fluctuations
from .build import build_action, build_observables
from .errors import LattgenError
from .registry import Registry, get_registry
from .sampler import Chain

PRIMARIES = "primaries.npz"
PYERRORS_FILE = "pyerrors.json.gz"
#: the pyerrors JSON file format version written
FORMAT_VERSION = "1.1"


class ExportError(LattgenError):
    """Results that cannot be exported (no primaries saved, unreadable files)."""


def primaries_npz(chain: Chain) -> bytes:
    """The chain's per-configuration primaries and acceptance as compressed npz bytes
    (``primaries.npz``): arrays ``<observable>`` (n_steps, n_chains, k), ``__accepted__``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, __accepted__=np.asarray(chain.accepted, dtype=np.float64),
                        **{k: np.asarray(v, dtype=np.float64) for k, v in chain.primaries.items()})
    return buf.getvalue()


def load_primaries(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``primaries.npz`` (ExportError if missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path.parent} has no {PRIMARIES} (per-configuration primaries); rerun the "
                          "sample with this lattgen version to export it")
    try:
        with np.load(path) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable npz file ({exc})") from None


def ensemble_name(results: Mapping[str, Any], label: str | None = None) -> str:
    """pyerrors' ensemble id of a run: readable parts and a hash of its action, sampler and run."""
    a = results["action"]
    ident = json.dumps({k: results.get(k) for k in ("action", "sampler", "run", "model")},
                       sort_keys=True, default=str)
    digest = hashlib.sha1(ident.encode()).hexdigest()[:8]
    parts = [a["name"], "x".join(map(str, a["lattice"])), results.get("sampler", {}).get("name", "run"),
             f"s{results.get('run', {}).get('seed', 0)}"]
    if label:
        parts.insert(0, label)
    return "_".join(str(p).replace("|", "-") for p in [*parts, digest])


def _data(name: str, deltas: np.ndarray, stride: int = 1) -> list[dict[str, Any]]:
    """pyerrors' ``data`` entry: one ensemble, one replica per chain, rows [config, d_0, d_1, ...];
    configurations numbered 1, 1 + stride, ... (the run's measurement index)."""
    n_steps, n_chains, _ = deltas.shape
    replicas = []
    index = 1 + stride * np.arange(n_steps, dtype=np.float64)
    for r in range(n_chains):
        rows = np.column_stack([index, deltas[:, r, :]])
        replicas.append({"name": f"{name}|r{r}",
                         "deltas": [[int(row[0]), *map(float, row[1:])] for row in rows]})
    return [{"id": name, "replica": replicas}]


def run_obsdata(results: Mapping[str, Any], primaries: Mapping[str, np.ndarray], registry: Registry,
                label: str | None = None) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(pyerrors obsdata entries, observable names exported, components left out) of one run."""
    action = build_action(results["action"], registry)
    names = [n for n in results["observables"] if n in primaries]
    observables = build_observables(action.lattice, names, registry, field=action.field_space.manifold)
    ens = ensemble_name(results, label)
    out, skipped = [], []
    for name, obs in observables.items():
        entry = results["observables"][name]
        derive = obs.derive if obs.derive is not None else _single_primary(name)
        _, deltas = projected_fluctuations(primaries[name], derive)
        values = np.atleast_1d(np.asarray(entry["value"], dtype=np.float64))
        index = entry.get("index_values") or list(range(values.size))
        keep = [j for j in range(values.size)
                if np.isfinite(values[j]) and np.all(np.isfinite(deltas[:, :, j]))]
        prefix = f"{label}/" if label else ""
        skipped += [f"{prefix}{name}[{j}]" for j in range(values.size) if j not in keep]
        if not keep:
            continue
        is_vector = isinstance(entry["value"], list)
        tags = [f"{prefix}{name}" + (f"[{entry.get('index') or 'i'}={index[j]}]" if is_vector else "")
                for j in keep]
        record: dict[str, Any] = {
            "type": "List" if is_vector else "Obs",
            "layout": str(len(keep)) if is_vector else "1",
            "tag": tags if is_vector else tags[:1],
            "value": [float(values[j]) for j in keep],
            "data": _data(ens, deltas[:, :, keep], int(results.get("measurement_stride", 1))),
        }
        out.append(record)
    return out, [f"{label}/{n}" if label else n for n in observables], skipped


def _runs(path: Path) -> list[tuple[Path, str | None]]:
    """(run directory, label) of every run a results path holds: one sample/analyse run, or the
    entries of a compare."""
    results_path = path / "results.json" if path.is_dir() else path
    if not results_path.is_file():
        raise ExportError(f"{str(path)!r} is neither a results.json nor a directory holding one")
    results = _read_json(results_path)
    if "entries" in results and "observables" not in results:
        runs = [(results_path.parent / "entries" / e["label"], e["label"]) for e in results["entries"]]
        if not runs:
            raise ExportError(f"{results_path}: a comparison without entries")
        return runs
    if "observables" not in results:
        raise ExportError(f"{results_path} holds no observables (not the results of a sample, analyse "
                          "or compare run)")
    return [(results_path.parent, None)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not readable JSON ({exc})") from None


def pyerrors_document(path: str | Path, registry: Registry | None = None) -> dict[str, Any]:
    """The pyerrors JSON document (a dict) of the results at ``path`` (see the module docstring)."""
    reg = registry or get_registry()
    obsdata, exported, skipped = [], [], []
    runs = _runs(Path(path))
    for run_dir, label in runs:
        results = _read_json(run_dir / "results.json")
        data, names, left = run_obsdata(results, load_primaries(run_dir / PRIMARIES), reg, label)
        obsdata += data
        exported += names
        skipped += left
    description = {
        "written_by": f"lattgen {__version__}",
        "source": str(Path(path)),
        "observables": exported,
        "left_out_not_finite": skipped,
        "note": "one Obs (vector observables: a List) per observable; chains are replicas; deltas are "
                "lattgen's linearised fluctuations; reproduce lattgen with obs.gamma_method(S=1.5)",
    }
    return {
        "program": f"lattgen {__version__}",
        "version": FORMAT_VERSION,
        "who": _user(),
        "date": datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": f"{socket.gethostname()}, {platform.platform()}",
        "description": json.dumps(description),
        "obsdata": obsdata,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container
        return "unknown"


def export_pyerrors(path: str | Path, out: str | Path | None = None, registry: Registry | None = None) -> Path:
    """Write the results at ``path`` (results.json or its directory) as pyerrors json.gz to ``out``
    (default: ``pyerrors.json.gz`` beside the results); returns the file written."""
    from .outdir import write_atomic

    doc = pyerrors_document(path, registry)
    src = Path(path)
    target = Path(out) if out is not None else (src if src.is_dir() else src.parent) / PYERRORS_FILE
    payload = gzip.compress(json.dumps(doc, allow_nan=False).encode("utf-8"), mtime=0)
    try:
        write_atomic(target, payload)
    except OSError as exc:
        raise ExportError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return target
