"""Where a trained phi^4 flow's error lies: its two-point function against the exact one, per momentum.

G_q(p) = E_q |phi~(p)|^2 / V is the flow's propagator; G(p) = E_q[w |phi~(p)|^2 / V] / E_q[w]
(w = exp(-S) / q, self-normalised) the target's, estimated from the same proposals. Their ratio
r(p) per p_hat^2 bin says whether the flow has the long-wavelength physics right; the KL between
the two Gaussians with these propagators, (1/2) sum_p (r - 1 - log r), taken with each bin's mean
ratio (per mode the estimate's noise, ~ 1/ESS, would dominate the sum), estimates the part of
the flow's KL(q || p) ~ logmeanexp(log w) - mean(log w) that a better Gaussian (spectrum) part
could remove. The rest is non-Gaussian; ``--L`` evaluates the same trained model on another
lattice (``relattice``: the couplings are convolutional): var log w ~ V at fixed coupling says the
error is local (extensive). Unconditional models (a conditional one would need its point):

    python bench/diag_spectrum.py runs/L32_multigrid_zm_b8 --n 4096
    python bench/diag_spectrum.py runs/L32_multigrid_zm_b8 --n 4096 --L 16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lattgen.build import build_action, make_generator
from lattgen.fourier import power_spectrum
from lattgen.reweight import draw_weighted, log_weight_summary, normalised_weights
from lattgen.rundir import load_trained


def diagnose(run_dir: str, n: int, batch: int = 512, bins: int = 16, seed: int = 11, size: int | None = None) -> dict:
    cfg, action, model = load_trained(run_dir)
    if hasattr(model, "condition"):
        raise SystemExit(f"{run_dir}: a conditional model; this diagnostic takes unconditional runs")
    if size is not None:
        section = {**cfg["action"], "lattice": [size] * len(action.lattice.shape)}
        action = build_action(section)
        model.relattice(action.lattice)
    lat = action.lattice
    lw, rec = draw_weighted(model, action, n, generator=make_generator(seed), batch_size=batch,
                            measure=lambda phi: {"spectrum": power_spectrum(phi, lat)})
    spec = rec["spectrum"]
    w = normalised_weights(lw)
    g_q = spec.mean(0)
    g_p = (w[:, None] * spec).sum(0)
    r = (g_q / g_p).numpy()
    p2 = lat.p_hat_squared().flatten().numpy()
    edges = np.quantile(p2[p2 > 0], np.linspace(0, 1, bins + 1))
    rows, gauss_kl = [], 0.0
    which = np.clip(np.searchsorted(edges, p2, side="right") - 1, 0, bins - 1)
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sel = (which == k) & (p2 > 0)
        if not sel.any():
            continue
        rb = float(r[sel].mean())
        gauss_kl += 0.5 * int(sel.sum()) * (rb - 1 - np.log(rb))
        rows.append({"p_hat2": [round(float(lo), 4), round(float(hi), 4)], "modes": int(sel.sum()),
                     "ratio_mean": round(rb, 4), "ratio_min": round(float(r[sel].min()), 4),
                     "ratio_max": round(float(r[sel].max()), 4)})
    r0 = float(r[p2 == 0][0])
    gauss_kl += 0.5 * (r0 - 1 - np.log(r0))
    kl = float(torch.logsumexp(lw, 0) - np.log(lw.numel()) - lw.mean())
    summary = log_weight_summary(lw)
    return {"run_dir": run_dir, "n": n, "volume": lat.volume, "var_log_w": summary["log_w_var"], "kl_estimate": kl,
            "gaussian_kl_binned": gauss_kl, "zero_mode_ratio": r0,
            "ess_per_n": summary["ess"], "bins": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=4096, help="fresh proposals")
    ap.add_argument("--bins", type=int, default=16, help="p_hat^2 bins (equal numbers of modes)")
    ap.add_argument("--L", type=int, default=None, help="evaluate on an L^d lattice instead of the trained one")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = diagnose(args.run_dir, args.n, bins=args.bins, size=args.L)
    rows = res.pop("bins")
    print(json.dumps(res))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
