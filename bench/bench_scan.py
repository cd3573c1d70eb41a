"""Issue 15 benchmarks: amortised (conditional) flows over a beta scan, and the broken phase.

(a) one conditional flow trained over beta in [0.55, 0.70] against 8 flows trained separately
    with the same total time, IMH acceptance at 8 points (phi^4, L = 16, lam = 0.5):

        bench-slot python bench/bench_scan.py conditional --time 1200 --clock cpu --out runs/scan_cond_cpu
        bench-slot python bench/bench_scan.py separate --time 150 --clock cpu --out runs/scan_sep_cpu
        python bench/bench_scan.py accept --cond runs/scan_cond_cpu --sep runs/scan_sep_cpu

    (a2) the same with the Gaussian layers conditioned too (condition_gaussian) and the zero-mode
    spline (zero_mode), both the defaults since; run before zero_mode existed, the first is now
    --model-params '{"zero_mode": false}' (docs/benchmarks.md, issue 15 (a2)):

        bench-slot python bench/bench_scan.py conditional --time 1200 --clock cpu --out runs/scan_cond_cpu2 --model-params '{"zero_mode": false}'
        bench-slot python bench/bench_scan.py conditional --time 1200 --clock cpu --out runs/scan_cond_cpu2_zm --model-params '{"zero_mode": true}'
        bench-slot python bench/bench_scan.py conditional --time 1200 --clock cpu --out runs/scan_cond_cpu2_tilt --model-params '{"zero_mode": false, "couplings_tilt": {"beta": 0.5}}'

(c) the scan's cost to 1% on chi, conditional flow vs HMC, at L = 8, 16 and 32 (the L = 32 flow
    is the L = 16 one moved to L = 32 and trained there 900 CPU s more), and the power-law
    extrapolation of the crossover in L:

        lattgen scan bench/configs/scan_L8.toml --out runs/scan_L8
        lattgen scan bench/configs/scan_L16.toml --out runs/scan_L16_zm   # uses runs/scan_cond_cpu2_zm
        python bench/bench_scan.py conditional --L 32 --time 900 --clock cpu --batch 64 --eval-n 2048 \
            --init-from runs/scan_cond_cpu2_zm --out runs/scan_cond_L32
        lattgen scan bench/configs/scan_L32.toml --out runs/scan_L32
        python bench/bench_scan.py cost runs/scan_L8 runs/scan_L16_zm runs/scan_L32 --L 8 16 32 --train-s 120 1200 2100

(b) broken phase, L = 16 and 32, beta = 0.7, 0.8: ESS(m)/s and sign flips of m, imh (+z2_flip)
    vs HMC and Metropolis, with the flows of (c):

        lattgen scan bench/configs/broken_L16.toml --out runs/broken_L16_zm
        python bench/bench_scan.py broken --out runs/broken_L16_zm
        lattgen scan bench/configs/broken_L32.toml --out runs/broken_L32
        python bench/bench_scan.py broken --out runs/broken_L32

(d) the L = 32 single-point frontier: bench/configs/L32_multigrid_zm*.toml (``lattgen train``, the
    variants by ``--set``) and bench/diag_spectrum.py (docs/benchmarks.md, issue 15 (d)).

Every run is one thread (``torch.set_num_threads(1)``); acceptances are the expected IMH
acceptance of 8192 fresh proposals (``lattgen.reweight.expected_imh_acceptance``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lattgen.build import build_action, make_generator
from lattgen.config import resolve_config
from lattgen.evaluation import evaluate
from lattgen.rundir import load_trained, train_run

BETAS = [round(float(b), 6) for b in np.linspace(0.55, 0.70, 8)]
LAM = 0.5


def config(model: dict, beta: float, L: int, time_s: float, seed: int = 1, clock: str = "wall",
           batch_size: int = 128) -> dict:
    raw = {"action": {"name": "phi4", "lattice": [L, L], "beta": beta, "lam": LAM},
           "model": model,
           "train": {"max_time_s": time_s, "batch_size": batch_size, "lr": 2e-3, "threads": 1, "clock": clock},
           "run": {"seed": seed}}
    return resolve_config(raw, require=("action", "model", "train"))


def acceptance_at(model, beta: float, L: int, n: int = 8192) -> dict:
    action = build_action({"name": "phi4", "lattice": [L, L], "beta": beta, "lam": LAM})
    if hasattr(model, "condition"):
        model.condition({"beta": beta})
    t0 = time.perf_counter()
    m = evaluate(model, action, n, make_generator(7), batch_size=1024)
    return {"beta": beta, "acceptance": m["acceptance"], "ess": m["ess"], "eval_s": time.perf_counter() - t0}


def cmd_conditional(args):
    model = {"name": args.model, "couplings": {"beta": [BETAS[0], BETAS[-1]]}, **json.loads(args.model_params)}
    cfg = config(model, 0.5 * (BETAS[0] + BETAS[-1]), args.L, args.time, clock=args.clock, batch_size=args.batch)
    res = train_run(cfg, args.out, resume=True, init_from=args.init_from)
    print(res.summary(), flush=True)
    _, _, trained = load_trained(args.out)
    rows = [acceptance_at(trained, b, args.L, args.eval_n) for b in BETAS]
    (Path(args.out) / "acceptance.json").write_text(json.dumps({"train_s": res.elapsed_s, "steps": res.step,
                                                                 "rows": rows}, indent=1))
    print(json.dumps(rows))


def cmd_separate(args):
    rows = []
    total = 0.0
    for beta in (BETAS if args.betas is None else [b for b in BETAS if b in args.betas]):
        out = Path(args.out) / f"beta{beta:g}"
        res = train_run(config({"name": args.model, **json.loads(args.model_params)}, beta, args.L, args.time,
                               clock=args.clock, batch_size=args.batch), out, resume=True, init_from=args.init_from)
        total += res.elapsed_s
        _, _, trained = load_trained(out)
        rows.append({**acceptance_at(trained, beta, args.L, args.eval_n), "train_s": res.elapsed_s, "steps": res.step})
        print(rows[-1], flush=True)
    (Path(args.out) / "acceptance.json").write_text(json.dumps({"train_s": total, "rows": rows}, indent=1))


def cmd_accept(args):
    cond = json.loads((Path(args.cond) / "acceptance.json").read_text())
    sep = json.loads((Path(args.sep) / "acceptance.json").read_text())
    print(f"conditional: {cond['train_s']:.0f} s, {cond.get('steps')} steps; separate: {sep['train_s']:.0f} s total")
    print("| beta | conditional | separate |\n|---|---|---|")
    for c, s in zip(cond["rows"], sep["rows"]):
        print(f"| {c['beta']:.4f} | {c['acceptance']:.3f} | {s['acceptance']:.3f} |")


def _load(out: str) -> dict:
    return json.loads((Path(out) / "results.json").read_text())


def cmd_broken(args):
    """ESS(m)/s, tau_int(m) and sign flips per entry and point of a broken-phase scan; flow/HMC ratios."""
    res = _load(args.out)
    rows = res["rows"]
    print("| beta | entry | acceptance | tau_int(m) | ESS(m)/s | sign flips | chains without a flip | <m> |")
    print("|---|---|---|---|---|---|---|---|")
    by = {}
    for r in rows:
        ess_s = r.get("magnetisation_n_eff", 0) / r["sample_time_s"] if r.get("sample_time_s") else float("nan")
        by[(r["beta"], r["label"])] = ess_s
        print(f"| {r['beta']:g} | {r['label']} | {r['acceptance']:.3f} | {r.get('magnetisation_tau_int', float('nan')):.3g} "
              f"| {ess_s:.3g} | {r.get('magnetisation_sign_sign_flips', float('nan')):.0f} "
              f"| {r.get('magnetisation_sign_chains_without_flip', float('nan')):.0f} "
              f"| {r.get('magnetisation', float('nan')):.3f}({1000 * r.get('magnetisation_error', float('nan')):.0f}e-3) |")
    for beta in sorted({b for b, _ in by}):
        hmc = by.get((beta, "hmc"))
        for label in ("flow", "flow_z2flip", "metropolis"):
            if (beta, label) in by and hmc:
                print(f"beta {beta:g}: ESS(m)/s {label} / hmc = {by[(beta, label)] / hmc:.3g}")
    for t in res["totals"]:
        print(f"{t['label']}: training {t['train_time_s']:.0f} s")


def cmd_cost(args):
    """Total scan cost to 1% on chi per method at each L, and the number of points where training pays."""
    totals = []
    for out in args.outs:
        res = _load(out)
        tot = {t["label"]: t for t in res["totals"]}
        totals.append(tot)
        cond, hmc = tot.get("conditional"), tot.get("hmc")
        print(f"{out}: " + "; ".join(f"{t['label']}: train {t['train_time_s']:.0f} s + sampling "
                                      f"{t['sample_cost_s']:.3g} s = {t['total_cost_s']:.3g} s"
                                      for t in res["totals"]))
        if cond and hmc:
            per_c = cond["sample_cost_s"] / cond["points"]
            per_h = hmc["sample_cost_s"] / hmc["points"]
            if per_c < per_h:
                print(f"  sampling per point: conditional {per_c:.3g} s, hmc {per_h:.3g} s: training pays after "
                      f"{cond['train_time_s'] / (per_h - per_c):.3g} points")
            else:
                print(f"  sampling per point: conditional {per_c:.3g} s >= hmc {per_h:.3g} s: no number of "
                      "points makes the conditional flow cheaper at this L")
        for r in res["rows"]:
            print(f"  {r['label']} beta {r['beta']:g}: acc {r['acceptance']:.3f} tau_chi "
                  f"{r.get('susceptibility_tau_int', float('nan')):.3g} cost {r['cost_s'] or float('nan'):.3g} s")
    if args.L:
        extrapolate(totals, args.L, args.train_s)


def extrapolate(totals: list[dict], sizes: list[int], train_s: list[float] | None = None) -> None:
    """Power laws c L^z through the per-point sampling cost of each method and the flow's training
    cost (least squares in log-log), and the L where the flow's training + sampling per scan would
    match HMC's sampling for this many points (an extrapolation: said so in the output). ``totals``:
    each output's results.json totals by label; ``train_s``
    replaces the recorded training time of each output (a flow fine-tuned from a smaller L records
    only its own stage)."""
    if len(sizes) != len(totals) or len(set(sizes)) < 2 or (train_s is not None and len(train_s) != len(totals)):
        raise SystemExit("--L (and --train-s): one value per output, at least two different extents")
    per = {label: [tot[label]["sample_cost_s"] / tot[label]["points"] for tot in totals]
           for label in ("conditional", "hmc")}
    train = [tot["conditional"]["train_time_s"] for tot in totals] if train_s is None else list(train_s)
    points = totals[-1]["conditional"]["points"]
    log_l = np.log(np.asarray(sizes, dtype=float))
    fits = {k: np.polyfit(log_l, np.log(v), 1) for k, v in [*per.items(), ("training", train)]}
    for k, (z, c) in fits.items():
        print(f"fit {k}: {np.exp(c):.3g} s x L^{z:.2f}  (measured: "
              + ", ".join(f"L={L}: {v:.3g} s" for L, v in zip(sizes, per.get(k, train))) + ")")
    z_ratio = fits["conditional"][0] - fits["hmc"][0]
    ratio_at = np.exp(fits["conditional"][1] - fits["hmc"][1])
    print(f"sampling per point, flow / hmc ~ {ratio_at:.3g} x L^{z_ratio:.2f} (extrapolated)")
    grid = np.unique(np.round(np.logspace(np.log10(min(sizes)), 5, 4000)))

    def law(k, L):
        z, c = fits[k]
        return np.exp(c) * L ** z

    for label, cost in (("sampling only", lambda L: points * law("conditional", L)),
                        (f"training + sampling at {points} points",
                         lambda L: law("training", L) + points * law("conditional", L))):
        below = grid[cost(grid) < points * law("hmc", grid)]
        print(f"crossover ({label}): " + (f"L ~ {below[0]:.0f} (extrapolated)" if below.size
                                          else "none up to L = 1e5 (extrapolated)"))


def main():
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("conditional", cmd_conditional), ("separate", cmd_separate)):
        s = sub.add_parser(name)
        s.add_argument("--time", type=float, required=True, help="training seconds (separate: per point)")
        s.add_argument("--out", required=True)
        s.add_argument("--L", type=int, default=16)
        s.add_argument("--model", default="conditional_multigrid" if name == "conditional" else "multigrid")
        s.add_argument("--model-params", default="{}", help="JSON of extra [model] keys")
        s.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="[train] clock of the budget")
        s.add_argument("--betas", type=float, nargs="*", default=None, help="separate: only these points")
        s.add_argument("--batch", type=int, default=128, help="[train] batch_size")
        s.add_argument("--eval-n", type=int, default=8192, help="fresh proposals per point for the acceptance")
        s.add_argument("--init-from", default=None, help="start from this trained run directory "
                       "(e.g. the L = 16 flow, moved to --L)")
        s.set_defaults(fn=fn)
    s = sub.add_parser("broken")
    s.add_argument("--out", required=True, help="output of lattgen scan bench/configs/broken_L{16,32}.toml")
    s.set_defaults(fn=cmd_broken)
    s = sub.add_parser("cost")
    s.add_argument("outs", nargs="+", help="outputs of lattgen scan bench/configs/scan_L{8,16,32}.toml")
    s.add_argument("--L", type=int, nargs="*", default=None,
                   help="the lattice extent of each output: fit power laws in L and extrapolate the crossover")
    s.add_argument("--train-s", type=float, nargs="*", default=None,
                   help="with --L: the flow's whole training CPU s behind each output (stages included)")
    s.set_defaults(fn=cmd_cost)
    s = sub.add_parser("accept")
    s.add_argument("--cond", required=True)
    s.add_argument("--sep", required=True)
    s.set_defaults(fn=cmd_accept)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
