"""Human-readable reports: physics-style value(error) formatting and rich tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from .jsonio import to_jsonable, write_json  # noqa: F401  (re-exported: report.write_json)


#: how the compare table shows an entry's consistency verdict (harness.consistency)
VERDICT_STYLE = {"yes": "[green]{}[/]", "NO": "[bold red]{}[/]", "too short": "[yellow]{}[/]"}

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
    vectors = []
    for name, entry in results.get("observables", {}).items():
        value = _scalar(entry, "value")
        if value is None:  # vector observable: full data in results.json
            vectors.append(f"{name}({entry.get('index', '')})")
            continue
        tau, dtau = _scalar(entry, "tau_int"), _scalar(entry, "tau_int_error")
        n_eff = _scalar(entry, "n_eff")
        table.add_row(
            name,
            format_value_error(value, _scalar(entry, "error") or 0.0),
            format_value_error(tau, dtau or 0.0) if tau is not None else "",
            f"{n_eff:.0f}" if n_eff is not None and math.isfinite(n_eff) else "",
        )
    if vectors:
        table.caption = "in results.json: " + ", ".join(vectors)
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


def _fmt(v, spec=".3g") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "-"


def compare_tables(summary: Mapping[str, Any]) -> list[Table]:
    """The `lattgen compare` report: a cost table and an observables table with pulls."""
    from .plots import headline

    names = headline(summary)
    fom = (summary.get("theory") or {}).get("figure_of_merit") or "-"
    perf = Table(title="cost and autocorrelation (same action, budget and analysis for all)")
    for col in ("entry", "model / sampler", "train s", "acceptance", *(f"tau_int {n}" for n in names),
                f"ESS({fom})/s", "time to target s"):
        perf.add_column(col, justify="left" if col in ("entry", "model / sampler") else "right")
    for e in summary["entries"]:
        p = e["performance"]
        what = (e["model"]["name"] + " + " if e.get("model") else "") + e["sampler"]["name"]
        taus = [format_value_error(p[f"tau_int_{n}"], p.get(f"tau_int_{n}_error") or 0)
                if p.get(f"tau_int_{n}") is not None else "-" for n in names]
        perf.add_row(
            e["label"], what, _fmt(p.get("train_time_s"), ".0f"), _fmt(e.get("acceptance"), ".3f"), *taus,
            _fmt(p.get("ess_per_s"), ".0f"), _fmt(p.get("time_to_target_s"), ".0f"),
        )
    names: list[str] = []
    for e in summary["entries"]:
        for name, o in e["observables"].items():
            if isinstance(o.get("value"), (int, float)) and name not in names:
                names.append(name)
    sigma = summary["compare"]["sigma"]
    against = "the exact values (the classical samplers' pooled estimate where none is known)" \
        if summary.get("exact") else "the classical samplers' pooled estimate"
    obs = Table(title=f"observables with pulls against {against} (! beyond {sigma:g} "
                      "sigma; ? beyond it but the chains are too short for a reliable error)")
    obs.add_column("entry")
    for n in names:
        obs.add_column(n, justify="right")
    obs.add_column("consistent")
    for e in summary["entries"]:
        pulls = e.get("consistency", {}).get("pulls", {})
        cells = []
        for n in names:
            o = e["observables"].get(n, {})
            if not isinstance(o.get("value"), (int, float)):
                cells.append("-")
                continue
            cell = format_value_error(o["value"], o.get("error") or 0)
            pull = pulls.get(n)
            if pull is not None:
                flag = abs(pull) > sigma
                unjudged = o.get("reliable", True) is False
                style = "yellow" if flag and unjudged else "bold red" if flag else "dim"
                cell += f" [{style}]{pull:+.1f}{'?' if flag and unjudged else '!' if flag else ''}[/]"
            cells.append(cell)
        verdict = e.get("consistency", {}).get("verdict", "yes")
        obs.add_row(e["label"], *cells, VERDICT_STYLE.get(verdict, verdict).format(verdict))
    exact = summary.get("exact") or {}
    if exact:  # the action's exact values (Action.exact), where it knows them
        obs.add_row("[bold]exact[/]", *(f"{exact[n]:.6g}" if n in exact else "" for n in names), "")
    return [perf, obs]


def scan_table(result: Mapping[str, Any]) -> list[Table]:
    """The `lattgen scan` report: one row per (point, entry), then each entry's total cost."""
    names = list(result["couplings"])
    fom = result.get("figure_of_merit")
    obs = [o for o in result.get("headline", []) if any(o in r for r in result["rows"])]
    rows = Table(title=f"scan over {', '.join(names)}: observables, acceptance, tau_int({fom}), "
                       f"sampling cost to {100 * result['scan']['target_rel_error']:g}% on {fom}")
    for col in (*names, "entry", *obs, "acceptance", f"tau_int {fom}", "cost s"):
        rows.add_column(col, justify="left" if col == "entry" else "right")
    for r in result["rows"]:
        cells = [format_value_error(r[o], r.get(f"{o}_error") or 0) if isinstance(r.get(o), (int, float))
                 else "-" for o in obs]
        tau = r.get(f"{fom}_tau_int")
        rows.add_row(*(f"{r[n]:g}" for n in names), r["label"], *cells, _fmt(r.get("acceptance"), ".3f"),
                     format_value_error(tau, r.get(f"{fom}_tau_int_error") or 0) if tau is not None else "-",
                     _fmt(r.get("cost_s"), ".3g"))
    totals = Table(title="total cost of the scan per method (training once for a conditional model, "
                         "per point otherwise, plus sampling to the target at every point)")
    for col in ("entry", "kind", "points", "train s", "sampling s", "total s", "per point s"):
        totals.add_column(col, justify="left" if col in ("entry", "kind") else "right")
    for t in result["totals"]:
        incomplete = "" if t["complete"] else " (some points without an error estimate)"
        totals.add_row(t["label"], t["kind"], str(t["points"]), _fmt(t["train_time_s"], ".0f"),
                       _fmt(t["sample_cost_s"], ".3g") + incomplete, _fmt(t["total_cost_s"], ".3g"),
                       _fmt(t["per_point_s"], ".3g"))
    return [rows, totals]


def verdict_lines(summary: Mapping[str, Any]) -> list[str]:
    """One line per verdict other than `yes` under the compare tables: which entries could not
    be judged (too short) and which are inconsistent with the exact samplers (NO)."""
    by: dict[str, list[str]] = {}
    for e in summary["entries"]:
        by.setdefault(e.get("consistency", {}).get("verdict", "yes"), []).append(e["label"])
    lines = []
    if by.get("NO"):
        reference = "the exact values" if summary.get("exact") else "the exact samplers"
        lines.append(f"NOT consistent with {reference}: {', '.join(by['NO'])} (a pull beyond "
                     f"{summary['compare']['sigma']:g} sigma with a reliable error)")
    if by.get("too short"):
        lines.append(f"too short to judge: {', '.join(by['too short'])} (their chains are too short for "
                     "their tau_int, so their errors are underestimates); raise compare.n_samples or "
                     "train longer")
    return lines
