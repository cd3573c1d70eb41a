"""HMC throughput benchmark: effective samples of the susceptibility per second of measurement.

ESS/s = N_eff / t_meas with N_eff = N / (2 tau_int) from the project's Gamma method
(lattgen.analysis) and t_meas the wall time of run_chain's measurement phase (thermalisation and
step-size tuning excluded, measuring the observables included). The plain batched leapfrog
baseline (64 chains, 10 steps of 0.1, float64) runs in the same invocation, so the ratio is
meaningful on a noisy machine.

    python bench/bench_hmc.py                      # L = 16, beta = 0.635, lam = 0.5, 2 threads
    python bench/bench_hmc.py --observables susceptibility
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

# Idle OpenMP workers sleep instead of spinning. On a 2-core machine shared with other jobs,
# spinning workers starve the main thread: with 2 threads and load ~2, HMC here ran ~20x slower
# (ACTIVE, the default) than with PASSIVE. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from lattgen_classical.hmc import FORCES_PER_STEP, HMC
from lattgen_phi4 import Phi4Action

from lattgen import Lattice
from lattgen.analysis import gamma_method
from lattgen.build import build_observables, make_generator
from lattgen.observable import measure_all
from lattgen.sampler import run_chain

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Setting:
    """One HMC configuration to time: sampler parameters, run dtype and measured steps per chain."""

    label: str
    dtype: str
    n_steps_measured: int
    params: dict = field(default_factory=dict)


BASELINE = Setting("baseline: leapfrog 64 ch, 10 x 0.1", "float64", 3000,
                   {"n_chains": 64, "integrator": "leapfrog", "n_steps": 10, "step_size": 0.1,
                    "trajectory_jitter": 0.0})
DEFAULT = Setting("lattgen hmc defaults", "float32", 600, {})


def run_setting(setting: Setting, action, observables, n_therm: int, seed: int) -> dict:
    """Run one setting; return the row of the table."""
    sampler = HMC(action, device="cpu", dtype=DTYPES[setting.dtype],
                  generator=make_generator(seed), **setting.params)
    n_samples = setting.n_steps_measured * sampler.n_chains
    chain = run_chain(sampler, measure_all(observables), n_samples, n_therm=n_therm)
    chi = observables["susceptibility"]
    res = gamma_method(chain.primaries["susceptibility"], chi.derive)
    info = chain.info
    return {
        "label": setting.label,
        "chains": sampler.n_chains,
        "dtype": setting.dtype,
        "integrator": info["integrator"],
        "eps": info["step_size"],
        "n_md": info["n_md_steps"],
        "acc": chain.acceptance,
        "chi": res.value,
        "chi_err": res.error,
        "tau": res.tau_int,
        "tau_err": res.tau_int_error,
        "n_eff": res.n_eff,
        "wall": chain.wall_time_s,
        "ess_per_s": res.n_eff / chain.wall_time_s,
        # load-independent cost: force evaluations per chain and effective sample
        "forces_per_ess": FORCES_PER_STEP[info["integrator"]] * info["n_md_steps"] * 2 * res.tau_int,
    }


def print_table(rows: list[dict]) -> None:
    base = rows[0]["ess_per_s"]
    head = (f"{'setting':36s} {'chains':>6s} {'dtype':>7s} {'integ':>8s} {'eps':>6s} {'n_md':>4s} "
            f"{'acc':>5s} {'chi':>15s} {'tau_int':>12s} {'N_eff':>8s} {'F/ESS':>6s} {'t_meas':>7s} "
            f"{'ESS/s':>8s} {'ratio':>6s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['label']:36s} {r['chains']:6d} {r['dtype']:>7s} {r['integrator']:>8s} {r['eps']:6.3f} "
              f"{r['n_md']:4d} {r['acc']:5.2f} {r['chi']:8.3f}({r['chi_err']:5.3f}) "
              f"{r['tau']:6.2f}({r['tau_err']:4.2f}) {r['n_eff']:8.0f} {r['forces_per_ess']:6.0f} {r['wall']:7.2f} "
              f"{r['ess_per_s']:8.0f} {r['ess_per_s'] / base:6.2f}")


def parse_params(items: list[str]) -> dict:
    """--set key=value pairs for the tuned setting (ints, floats, strings)."""
    out = {}
    for item in items:
        key, text = item.split("=", 1)
        for conv in (int, float):
            try:
                out[key] = conv(text)
                break
            except ValueError:
                continue
        else:
            out[key] = None if text == "None" else text
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--ndim", type=int, default=2)
    ap.add_argument("--beta", type=float, default=0.635)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-therm", type=int, default=300, help="thermalisation/tuning trajectories")
    ap.add_argument("--observables", choices=("all", "susceptibility"), default="all")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=DEFAULT.dtype)
    ap.add_argument("--steps", type=int, default=DEFAULT.n_steps_measured,
                    help="measured trajectories per chain of the tuned setting")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an HMC parameter of the tuned setting (repeatable)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate baseline and tuned runs this often (seed + k); report medians")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    lattice = Lattice([args.L] * args.ndim)
    action = Phi4Action(lattice, beta=args.beta, lam=args.lam)
    names = None if args.observables == "all" else ["susceptibility"]
    observables = build_observables(lattice, names)
    tuned = Setting(DEFAULT.label if not args.set else "lattgen hmc " + " ".join(args.set),
                    args.dtype, args.steps, parse_params(args.set))
    settings = ([] if args.no_baseline else [BASELINE]) + [tuned]

    print("command:", "python " + " ".join([sys.argv[0], *sys.argv[1:]]) if argv is None else argv)
    print(f"lattice {list(lattice.shape)}, beta = {args.beta}, lam = {args.lam}; torch {torch.__version__}, "
          f"threads = {torch.get_num_threads()}, OMP_WAIT_POLICY = {os.environ['OMP_WAIT_POLICY']}, "
          f"observables = {args.observables} ({len(observables)}); "
          f"load average before: {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    per_setting: dict[str, list[float]] = {}
    for k in range(args.repeat):
        rows = [run_setting(s, action, observables, args.n_therm, args.seed + k) for s in settings]
        print_table(rows)
        for r in rows:
            per_setting.setdefault(r["label"], []).append(r["ess_per_s"])
    print("F/ESS: force evaluations per chain and effective sample of chi (load-independent cost); "
          "t_meas: wall time of the measurement phase")
    if args.repeat > 1:
        medians = {label: statistics.median(v) for label, v in per_setting.items()}
        for label, med in medians.items():
            print(f"median ESS/s over {args.repeat} runs: {med:8.0f}  {label}")
        if not args.no_baseline:
            print(f"ratio of medians: {medians[tuned.label] / medians[BASELINE.label]:.2f}")
    print(f"total {time.perf_counter() - t0:.0f} s; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
