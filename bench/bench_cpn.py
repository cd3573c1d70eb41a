"""CP^{N-1} benchmarks: tau_int(Q^2) of sphere_hmc, cpn_local and the cpn_flow (imh) against N.

    python bench/bench_cpn.py scan --N 2 3 4 --L 16 --betas 0.6 0.8 1.0     # classical samplers
    python bench/bench_cpn.py flow --N 3 --L 8 --beta 0.8 --train-s 600      # train + imh
    (run long ones through /work/tools/bench-slot; one torch thread)

Every entry prints one JSON line (prefix BENCH_RESULT) with xi_2, <Q^2>, chi_t xi^2 and the
Gamma-method tau_int of Q^2 (in trajectories, sweeps or proposals), its error and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lattgen import Lattice
from lattgen.analysis import analyse_chain
from lattgen.observable import measure_all
from lattgen.registry import get_registry
from lattgen.sampler import run_chain

MARK = "BENCH_RESULT "
#: a rejection run longer than 1/STUCK_FRACTION of a chain marks the chain unreliable
STUCK_FRACTION = 10
NAMES = ("topological_charge_squared", "cpn_xi", "cpn_chi_t_xi2", "cpn_energy", "topological_susceptibility",
         "cpn_chi_m")


def summary(label, n_comp, length, beta, res, wall, extra=None):
    out = {"label": label, "N": n_comp, "L": length, "beta": beta, "wall_s": round(wall, 1)}
    for name in NAMES:
        r = res[name]
        out[name] = [r["value"], r["error"]]
    out["tau_q2"] = [res["topological_charge_squared"]["tau_int"], res["topological_charge_squared"]["tau_int_error"]]
    out["reliable_q2"] = res["topological_charge_squared"]["reliable"]
    out.update(extra or {})
    # an IMH chain stuck in one state for a tenth of its length is not equilibrated, whatever the
    # Gamma method's window check says (the CP^9 flow chain of round 3: a run of 1020 in 1024)
    run, per_chain = out.get("longest_rejection_run"), out.get("steps_per_chain")
    if run is not None and per_chain:
        out["stuck"] = run >= per_chain / STUCK_FRACTION
        out["reliable_q2"] = out["reliable_q2"] and not out["stuck"]
    print(MARK + json.dumps(out), flush=True)
    return out


def run_classical(sampler_name, n_comp, length, beta, n_steps, n_chains, seed=0, params=None):
    reg = get_registry()
    lat = Lattice([length, length])
    action = reg.get("action", "cpn").build(lat, params={"N": n_comp, "beta": beta})
    obs = {n: reg.get("observable", n, field="sphere").build(lat) for n in NAMES}
    sampler = reg.get("sampler", sampler_name).build(
        action, params={"n_chains": n_chains, **(params or {})}, device="cpu", dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    chain = run_chain(sampler, measure_all(obs), n_steps * n_chains, n_therm=max(200, n_steps // 5))
    wall = time.perf_counter() - t0
    return summary(sampler_name, n_comp, length, beta, analyse_chain(chain, obs), wall,
                   {"n_chains": n_chains, "steps": n_steps, "acceptance": chain.acceptance,
                    "info": {k: v for k, v in chain.info.items() if isinstance(v, (int, float))}})


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sc = sub.add_parser("scan")
    sc.add_argument("--N", type=int, nargs="+", default=[2, 3, 4])
    sc.add_argument("--L", type=int, default=16)
    sc.add_argument("--betas", type=float, nargs="+", required=True)
    sc.add_argument("--steps", type=int, default=2000)
    sc.add_argument("--chains", type=int, default=8)
    sc.add_argument("--samplers", nargs="+", default=["sphere_hmc", "cpn_local"])
    fl = sub.add_parser("flow")
    fl.add_argument("--N", type=int, default=3)
    fl.add_argument("--L", type=int, default=8)
    fl.add_argument("--beta", type=float, required=True)
    fl.add_argument("--train-s", type=float, default=600)
    fl.add_argument("--samples", type=int, default=20000)
    fl.add_argument("--layers", type=int, default=8)
    fl.add_argument("--hidden", type=int, nargs="+", default=[32, 32])
    fl.add_argument("--batch", type=int, default=64)
    fl.add_argument("--lr", type=float, default=1e-3)
    fl.add_argument("--out", default=None)
    fl.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    fl.add_argument("--flow", default="v2", choices=("v1", "v2", "decimated"),
                    help="v1: the first cpn_flow (bench/cpn_flow_v1.py); v2: cpn_flow; decimated: cpn_decimated")
    fl.add_argument("--directions", type=int, default=None)
    fl.add_argument("--path-gradient", action="store_true")
    fl.add_argument("--pretrain-l", type=int, default=None, help="train first at this L (curriculum)")
    fl.add_argument("--pretrain-fraction", type=float, default=0.5, help="share of --train-s at --pretrain-l")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "scan":
        for n_comp in args.N:
            for beta in args.betas:
                for s in args.samplers:
                    run_classical(s, n_comp, args.L, beta, args.steps, args.chains)
    else:
        from bench_cpn_flow import run_flow

        run_flow(args, summary)


if __name__ == "__main__":
    main()
