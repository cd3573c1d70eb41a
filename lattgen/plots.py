"""Plots (PNG, matplotlib Agg) in one shared style: a comparison's learning curves, tau_int,
histograms (small multiples per entry), log-weights (central quantiles, outliers counted), C(t).

``styled`` (the shared ``STYLE`` and entry colours) decorates every plot here and the scaling and
scan plots, so all figures read alike.
"""

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


#: one colour per entry, in entry order, in every plot (colour-blind safe: Okabe & Ito 2008)
#: (no grey: grey is the reference histogram's)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
           "#882255")

#: the shared look of every lattgen plot (compare, scale, scan): applied by ``styled``
STYLE = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 10,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "axes.spines.top": False, "axes.spines.right": False,
    "lines.linewidth": 1.4, "lines.markersize": 4, "errorbar.capsize": 3,
    "legend.frameon": False, "savefig.dpi": 120, "figure.dpi": 120,
}


def entry_color(i: int) -> str:
    """The colour of the i-th entry (or series): the same entry has the same colour in every plot."""
    return PALETTE[i % len(PALETTE)]


def styled(plot):
    """Decorator: run a plotting function under the shared ``STYLE`` and entry colours (the
    rcParams hold only inside the call; nothing global is changed)."""
    import functools

    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        from cycler import cycler

        with pyplot().rc_context({**STYLE, "axes.prop_cycle": cycler(color=list(PALETTE))}):
            return plot(*args, **kwargs)

    return wrapper


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


@styled
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


@styled
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


def _grid(plt, n: int, width: float = 2.7, height: float = 2.2, **kw):
    """A figure of n small panels (at most 4 a row); unused panels hidden; the used axes, in order."""
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 0.6, height * nrows + 0.8),
                             squeeze=False, **kw)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    for k, ax in enumerate(flat[:n]):
        if k + ncols >= n:  # the lowest panel of its column: its x tick labels (shared axes hide them)
            ax.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


#: central quantiles a log-weight panel shows at most (the rest is counted and written on the panel)
LOG_WEIGHT_QUANTILES = (0.005, 0.995)


def clipped_range(values: np.ndarray, quantiles: tuple[float, float],
                  fence: float = 5.0) -> tuple[float, float, float]:
    """(lo, hi, fraction of values outside [lo, hi]) of finite ``values``: the central ``quantiles``,
    narrowed to at most ``fence`` interquartile ranges beyond the quartiles (so a tail holding more
    than the quantile's share cannot flatten the bulk; Tukey's fences); width 1 around a constant."""
    q_lo, q1, q3, q_hi = (float(q) for q in np.quantile(values, [quantiles[0], 0.25, 0.75, quantiles[1]]))
    iqr = q3 - q1
    lo, hi = (max(q_lo, q1 - fence * iqr), min(q_hi, q3 + fence * iqr)) if iqr > 0 else (q_lo, q_hi)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi, float(np.mean((values < lo) | (values > hi)))


@styled
def plot_histograms(summary, out: Path) -> Path | None:
    """Small multiples of the theory's histogrammed quantity (for example a magnetisation): one panel
    per entry on shared axes, over the exact (classical) samplers' pooled histogram in grey."""
    plt = pyplot()
    series = []
    for i, e in enumerate(summary["entries"]):
        data = _plotdata(out, e["label"])
        values = data.get("hist", data.get("m"))  # "m": plot data written before theories declared it
        if values is not None and np.isfinite(values).any():
            series.append((i, e, np.asarray(values, dtype=np.float64).ravel()))
    if not series:
        return None
    pooled = np.concatenate([v for _, _, v in series])
    pooled = pooled[np.isfinite(pooled)]
    lo, hi = np.quantile(pooled, [0.0005, 0.9995])
    if np.all(pooled == np.round(pooled)) and hi - lo <= 200:  # integers (e.g. a topological charge)
        bins = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5)
    else:
        bins = np.linspace(lo, hi, 61) if hi > lo else 60
    exact = [v for _, e, v in series if "model" not in e]
    reference = np.concatenate(exact) if exact else None
    fig, axes = _grid(plt, len(series), sharex=True, sharey=True)
    theory = summary.get("theory") or {}
    xlabel = theory.get("histogram_label") or theory.get("histogram") or "histogrammed observable"
    for ax, (i, e, values) in zip(axes, series):
        if reference is not None:
            ax.hist(reference, bins=bins, density=True, color="0.8", label="exact samplers, pooled")
        ax.hist(values, bins=bins, density=True, histtype="step", lw=1.4, color=entry_color(i),
                label=e["label"])
        ax.set_title(e["label"])
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel("probability density", fontsize=9)
    if reference is not None:
        from matplotlib.patches import Patch

        fig.legend(handles=[Patch(color="0.8", label="exact samplers, pooled")], loc="upper right")
    fig.suptitle(_title(summary))
    return save_figure(fig, out / "histograms.png")


@styled
def plot_log_weights(summary, out: Path) -> Path | None:
    """Small multiples of log w - median(log w) per model entry, clipped to its central quantiles
    ``LOG_WEIGHT_QUANTILES`` (``clipped_range``); the fraction outside and the extremes are written
    on each panel."""
    plt = pyplot()
    series = []
    for i, e in enumerate(summary["entries"]):
        lw = _plotdata(out, e["label"]).get("log_weights")
        if lw is None:
            continue
        lw = np.asarray(lw, dtype=np.float64).ravel()
        lw = lw[np.isfinite(lw)]
        if lw.size:
            series.append((i, e, lw - np.median(lw)))
    if not series:
        return None
    fig, axes = _grid(plt, len(series))
    q_lo, q_hi = LOG_WEIGHT_QUANTILES
    for ax, (i, e, lw) in zip(axes, series):
        lo, hi, outside = clipped_range(lw, LOG_WEIGHT_QUANTILES)
        inside = (lw >= lo) & (lw <= hi)
        ax.hist(lw[inside], bins=50, range=(lo, hi), density=True, color=entry_color(i), alpha=0.75)
        ax.set_xlim(lo, hi)
        ax.set_title(e["label"])
        ax.text(0.03, 0.95, f"{outside:.1%} outside the range shown\n"
                f"min {lw.min():.3g}, max {lw.max():.3g}", transform=ax.transAxes, va="top", ha="left",
                fontsize=7, bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.85})
    fig.supxlabel("log w - median(log w)", fontsize=9)
    fig.supylabel("probability density", fontsize=9)
    fig.suptitle(f"log w = -S(phi) - log q(phi), central {q_hi - q_lo:.0%} of each entry: " + _title(summary))
    return save_figure(fig, out / "log_weights.png")


@styled
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
            plot_log_weights(summary, out), plot_correlator(summary, out)]
    return [p for p in made if p is not None]
