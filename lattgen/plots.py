"""Plots of a comparison (PNG, matplotlib Agg): learning curves, tau_int, histograms, G(t)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    """pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG and close a figure; returns its path."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def _title(summary: Mapping[str, Any]) -> str:
    a = summary["action"]
    params = ", ".join(f"{k} = {v}" for k, v in a.items() if k not in ("name", "lattice"))
    return f"{a['name']}, L = {'x'.join(map(str, a['lattice']))}, {params}"


def plot_training(summary, out: Path) -> Path | None:
    """Acceptance and importance-sampling ESS/N against training time, one line per model."""
    curves = [(e["label"], e["training"]["curve"]) for e in summary["entries"]
              if e.get("training") and e["training"].get("curve")]
    if not curves:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, curve in curves:
        t = [r.get("time") for r in curve]
        for ax, key in zip(axes, ("acceptance", "ess")):
            y = [r.get(key) for r in curve]
            if any(v is not None for v in y):
                ax.plot(t, [np.nan if v is None else v for v in y], marker="o" if len(t) <= 60 else None,
                        ms=3, label=label)
    axes[0].set_ylabel("Metropolis acceptance (estimate)")
    axes[1].set_ylabel("importance-sampling ESS / N")
    for ax in axes:
        ax.set_xlabel("training time [s]")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training: " + _title(summary))
    return save_figure(fig, out / "training.png")


def headline(summary: Mapping[str, Any]) -> list[str]:
    """The observables whose tau_int the report shows: the theory's headline and figure of merit
    (recorded in the summary), else every ``tau_int_<name>`` in the entries' performance."""
    theory = summary.get("theory") or {}
    names = [*theory.get("headline", ()), *([theory["figure_of_merit"]] if theory.get("figure_of_merit") else [])]
    if not names:
        names = [k[len("tau_int_"):] for e in summary["entries"] for k in e.get("performance", {})
                 if k.startswith("tau_int_") and not k.endswith("_error")]
    return list(dict.fromkeys(names))


def plot_tau(summary, out: Path) -> Path:
    """tau_int of the headline observables per entry with Gamma-method error bars (log scale)."""
    plt = pyplot()
    entries = summary["entries"]
    labels = [e["label"] for e in entries]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels) + 2), 4.2))
    names = headline(summary)
    width = 0.72 / max(1, len(names))
    for i, obs in enumerate(names):
        tau = [e["performance"].get(f"tau_int_{obs}") or np.nan for e in entries]
        err = [e["performance"].get(f"tau_int_{obs}_error") or 0 for e in entries]
        shift = (i - (len(names) - 1) / 2) * width
        ax.bar(x + shift, tau, width=width, yerr=err, capsize=3, label=f"tau_int({obs})")
    ax.axhline(0.5, color="k", lw=0.8, ls="--", label="uncorrelated (0.5)")
    ax.set_xticks(x, labels, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("tau_int [Markov steps]")
    ax.set_title("Integrated autocorrelation time: " + _title(summary), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out / "tau_int.png")


def _plotdata(out: Path, label: str) -> dict[str, np.ndarray]:
    path = out / "entries" / label / "plotdata.npz"
    if not path.is_file():
        return {}
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def histogram_bins(values: np.ndarray, default: int = 60):
    """Unit bins centred on the integers for integer-valued data with few distinct values (for
    example a topological charge), else ``default`` equal bins."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size and np.all(v == np.round(v)) and v.max() - v.min() <= 200:
        return np.arange(v.min() - 0.5, v.max() + 1.5)
    return default


def plot_histograms(summary, out: Path) -> Path:
    """Histograms of the theory's histogrammed quantity (all entries; for example a magnetisation) and
    of log-weights (model entries)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    any_w = False
    for e in summary["entries"]:
        data = _plotdata(out, e["label"])
        values = data.get("hist", data.get("m"))  # "m": plot data written before theories declared it
        if values is not None:
            axes[0].hist(values.ravel(), bins=histogram_bins(values), density=True, histtype="step",
                         label=e["label"])
        if "log_weights" in data:
            lw = data["log_weights"].ravel().astype(np.float64)
            lw = lw[np.isfinite(lw)]
            if lw.size:
                any_w = True
                axes[1].hist(lw - np.median(lw), bins=60, density=True, histtype="step", label=e["label"])
    theory = summary.get("theory") or {}
    axes[0].set_xlabel(theory.get("histogram_label") or theory.get("histogram") or "histogrammed observable")
    axes[0].set_ylabel("probability density")
    axes[1].set_xlabel("log w - median(log w),  log w = -S(phi) - log q(phi)")
    axes[1].set_ylabel("probability density")
    if not any_w:
        axes[1].text(0.5, 0.5, "no model entries", ha="center", transform=axes[1].transAxes)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(_title(summary))
    return save_figure(fig, out / "histograms.png")


def plot_correlator(summary, out: Path, key: str = "zero_momentum_correlator") -> Path | None:
    """Zero-momentum correlator C(t) with errors, one series per entry (log scale)."""
    series = [(e["label"], e["observables"][key]) for e in summary["entries"] if key in e["observables"]]
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    n = len(series)
    for i, (label, o) in enumerate(series):
        v = np.asarray(o["value"], dtype=float)
        err = np.asarray(o["error"], dtype=float)
        t = np.arange(len(v)) + (i - (n - 1) / 2) * 0.06
        ax.errorbar(t, v, yerr=err, fmt="o-", ms=3, capsize=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("t [lattice units]")
    ax.set_ylabel("C(t) (zero-momentum correlator)")
    ax.set_title(_title(summary), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out / "correlator.png")


def compare_plots(summary, out: Path) -> list[Path]:
    """Every comparison plot; returns the files written."""
    out = Path(out)
    made = [plot_training(summary, out), plot_tau(summary, out), plot_histograms(summary, out),
            plot_correlator(summary, out)]
    return [p for p in made if p is not None]
