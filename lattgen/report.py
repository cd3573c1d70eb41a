"""Human-readable reports: physics-style value(error) formatting and rich tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table


def format_value_error(value: float, error: float, digits: int = 2) -> str:
    """'0.7512(34)': the value rounded to ``digits`` significant digits of its error."""
    if value is None or not math.isfinite(value):
        return "nan"
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{value:.6g}"
    exponent = math.floor(math.log10(error)) - (digits - 1)
    decimals = max(0, -exponent)
    err_digits = round(error / 10**exponent)
    if err_digits >= 10**digits:  # rounding carried (e.g. 0.0999 -> 100)
        exponent += 1
        decimals = max(0, -exponent)
        err_digits = round(error / 10**exponent)
    if decimals == 0:
        return f"{value:.0f}({err_digits * 10**exponent:.0f})"
    return f"{value:.{decimals}f}({err_digits})"


def _scalar(entry: Mapping[str, Any], key: str) -> float | None:
    v = entry.get(key)
    return v if isinstance(v, (int, float)) else None


def observables_table(results: Mapping[str, Any], title: str = "") -> Table:
    """One row per scalar observable: value(error), tau_int(error), N_eff."""
    table = Table(title=title or None, show_lines=False)
    table.add_column("observable")
    table.add_column("value", justify="right")
    table.add_column("tau_int", justify="right")
    table.add_column("N_eff", justify="right")
    for name, entry in results.get("observables", {}).items():
        value = _scalar(entry, "value")
        if value is None:  # vector observable: summarised, full data in results.json
            n = len(entry.get("value", []))
            table.add_row(name, f"[dim]{n} values ({entry.get('index', 'index')}), see results.json[/dim]", "", "")
            continue
        tau, dtau = _scalar(entry, "tau_int"), _scalar(entry, "tau_int_error")
        n_eff = _scalar(entry, "n_eff")
        table.add_row(
            name,
            format_value_error(value, _scalar(entry, "error") or 0.0),
            format_value_error(tau, dtau or 0.0) if tau is not None else "",
            f"{n_eff:.0f}" if n_eff is not None and math.isfinite(n_eff) else "",
        )
    return table


def print_sample_report(results: Mapping[str, Any], console: Console | None = None) -> None:
    """The `lattgen sample` summary: settings line, acceptance and the observables table."""
    console = console or Console()
    act = results.get("action", {})
    smp = results.get("sampler", {})
    console.print(
        f"[bold]{act.get('name')}[/bold] {act.get('lattice')} "
        + " ".join(f"{k}={v}" for k, v in act.items() if k not in ("name", "lattice"))
        + f"  |  sampler [bold]{smp.get('name')}[/bold]  |  {results.get('n_samples')} samples"
        + f"  |  acceptance {results.get('acceptance', float('nan')):.3f}"
        + f"  |  {results.get('wall_time_s', float('nan')):.1f} s"
    )
    console.print(observables_table(results))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays (recursively) into JSON types; NaN -> None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(data: Any, path: str | Path) -> None:
    """Write JSON atomically (temp file + rename) so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    tmp.replace(path)
