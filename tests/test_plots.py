"""Compare plots (lattgen/plots.py): small multiples per entry, log-weights clipped to central
quantiles with the outliers counted, one shared style."""

from __future__ import annotations

import numpy as np
import pytest

from lattgen import plots


def _summary(tmp_path, n_entries=5):
    rng = np.random.default_rng(0)
    entries = []
    for i in range(n_entries):
        label = f"e{i}"
        model = i < 3
        data = {"hist": rng.standard_normal((200, 4)).astype(np.float32), "accepted": np.ones((200, 4))}
        if model:  # a narrow bulk and a 2% tail reaching down to -250
            lw = rng.normal(0.0, 0.5, 5000)
            lw[:100] = rng.uniform(-250, -10, 100)
            data["log_weights"] = lw.reshape(1000, 5)
        d = tmp_path / "entries" / label
        d.mkdir(parents=True)
        np.savez(d / "plotdata.npz", **data)
        entries.append({"label": label, **({"model": {"name": "x"}} if model else {}), "observables": {},
                        "performance": {}})
    return {"action": {"name": "toy", "lattice": [4, 4], "beta": 0.5}, "theory": {"histogram": "m"},
            "entries": entries}


def test_clipped_range_counts_the_tail():
    lw = np.concatenate([np.linspace(-1, 1, 9980), np.full(20, -250.0)])  # a 0.2% tail
    lo, hi, outside = plots.clipped_range(lw, plots.LOG_WEIGHT_QUANTILES)
    assert lo > -250 and hi <= 1 and outside == pytest.approx(0.01, abs=2e-3)
    lo, hi, outside = plots.clipped_range(np.zeros(10), (0.005, 0.995))
    assert (lo, hi, outside) == (-0.5, 0.5, 0.0)
    # a tail beyond the quantile's share: the fences keep the bulk readable, the tail is counted
    bulk = np.random.default_rng(1).normal(0.0, 1.0, 9800)
    lo, hi, outside = plots.clipped_range(np.concatenate([bulk, np.full(200, -250.0)]), (0.005, 0.995))
    assert -10 < lo < -3 and outside >= 0.02


def test_histograms_and_log_weights_are_small_multiples(tmp_path):
    summary = _summary(tmp_path)
    made = plots.compare_plots(summary, tmp_path)
    names = {p.name for p in made}
    assert {"histograms.png", "log_weights.png", "tau_int.png"} <= names
    import matplotlib.image as mpimg

    wide = mpimg.imread(tmp_path / "histograms.png")
    assert wide.shape[1] > wide.shape[0]  # 5 panels: a row of 4 and one more below


def test_style_is_shared_and_local():
    import matplotlib

    before = matplotlib.rcParams["axes.spines.top"]

    @plots.styled
    def probe():
        return matplotlib.rcParams["axes.spines.top"], matplotlib.rcParams["font.size"]

    assert probe() == (False, plots.STYLE["font.size"])
    assert matplotlib.rcParams["axes.spines.top"] == before  # nothing global changed
    assert plots.entry_color(0) == plots.entry_color(len(plots.PALETTE))
