"""2D U(1): the gauge-equivariant flow against HMC and the heatbath at one (L, beta), in one run.

    python bench/bench_u1.py --L 8 --beta 2 --train-s 900 --samples 50000 --out /tmp/u1_L8
    python bench/bench_u1.py --L 16 --beta 6 --train-s 1800 --samples 20000 --classical hmc u1_heatbath
    python bench/bench_u1.py --L 16 --beta 6 --cost            # sampling cost per configuration only

Trains ``u1_equivariant`` (``--set model.name=u1_tree`` for the dual-tree flow; ``--set
model.key=value`` / ``train.key=value`` override its config)
for ``--train-s`` seconds of wall time on one thread into ``--out`` (resumed if a checkpoint is
there), then samples it with IMH, and runs each ``--classical`` sampler for the same number of
measured configurations (HMC with trajectory length 1, step size tuned in thermalisation; the
heatbath with one overrelaxation sweep per heatbath sweep). For each entry it prints
<cos P> and <Q^2> with their pulls against the exact values (lattgen_u1.exact), tau_int(Q^2),
the acceptance, and the effective samples of Q^2 per second of sampling and, for the flow, per
second of training + sampling. ``--cost``: seconds per configuration of each sampler (and of
the untrained flows' proposals, u1_equivariant and u1_tree) on the CPU and, if there is one, on the GPU. One JSON line per
entry on stdout (``--json FILE`` also writes them all).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lattgen import Lattice
from lattgen.config import parse_value, resolve_config
from lattgen.registry import get_registry
from lattgen.rundir import load_trained, train_run
from lattgen.sample import run_sampling

OBSERVABLES = ["plaquette", "topological_charge_squared"]


def parse_set(items):
    out: dict = {}
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.strip().partition(".")
        out.setdefault(section, {})[name] = parse_value(raw.strip())
    return out


def summarise(label, results, exact, train_s=0.0):
    obs = results["observables"]
    row = {"entry": label, "acceptance": results["acceptance"], "n_samples": results["n_samples"],
           "sample_s": results["wall_time_s"], "therm_s": results["therm_time_s"], "train_s": train_s}
    for name in OBSERVABLES:
        o = obs[name]
        row[name] = o["value"]
        row[f"{name}_error"] = o["error"]
        row[f"{name}_exact"] = exact[name]
        row[f"{name}_pull"] = (o["value"] - exact[name]) / o["error"] if o["error"] else None
        row[f"tau_int_{name}"] = o["tau_int"]
        row[f"tau_int_{name}_error"] = o["tau_int_error"]
    n_eff = obs["topological_charge_squared"]["n_eff"]
    row["ess_q2_per_s_sampling"] = n_eff / results["wall_time_s"]
    row["ess_q2_per_s_total"] = n_eff / (results["wall_time_s"] + results["therm_time_s"] + train_s)
    return row


def run_flow(args, exact):
    sets = parse_set(args.set)
    raw = {"action": {"name": "u1", "lattice": [args.L, args.L], "beta": args.beta},
           "model": {"name": "u1_equivariant", **sets.get("model", {})},
           "train": {"max_time_s": args.train_s, "batch_size": 64, "lr": 1e-3, "threads": 1,
                     "log_every": 100, "eval_batch": 512, **sets.get("train", {})},
           "run": {"seed": args.seed}}
    cfg = resolve_config(raw, require=("action", "model", "train"))
    out = Path(args.out)
    result = train_run(cfg, out, resume=True)
    config, _, model = load_trained(out)
    sample_cfg = dict(config, sampler={"name": "imh", "n_chains": 16, "batch_size": 64},
                      run=dict(config["run"], n_samples=args.samples, observables=OBSERVABLES))
    sample_cfg = resolve_config(sample_cfg, require=("action", "sampler"))
    results, _ = run_sampling(sample_cfg, model=model)
    return summarise(f"{config['model']['name']} + imh", results, exact, train_s=result.elapsed_s)


def run_classical(name, args, exact):
    params = {"hmc": {"n_chains": 64, "trajectory_length": 1.0}, "u1_heatbath": {"n_chains": 64}}[name]
    cfg = resolve_config({"action": {"name": "u1", "lattice": [args.L, args.L], "beta": args.beta},
                          "sampler": {"name": name, **params},
                          "run": {"seed": args.seed,
                                  "n_samples": (args.heatbath_samples if name == "u1_heatbath" else None)
                                  or args.classical_samples or args.samples,
                                  "n_therm": args.therm,
                                  "observables": OBSERVABLES}}, require=("action", "sampler"))
    results, _ = run_sampling(cfg)
    return summarise(name, results, exact)


def cost(args):
    """Seconds per configuration: one step of every chain / n_chains, after a warm-up."""
    reg = get_registry()
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        action = reg.get("action", "u1").build(Lattice([args.L, args.L]), params={"beta": args.beta})
        models = {m: reg.get("model", m).build(action).to(device) for m in ("u1_equivariant", "u1_tree")}
        for name, params in (("hmc", {"n_chains": 64, "trajectory_length": 1.0}),
                             ("u1_heatbath", {"n_chains": 64}), ("imh", {"n_chains": 64, "batch_size": 16}),
                             ("imh:u1_tree", {"n_chains": 64, "batch_size": 16})):
            sampler_name, _, model_name = name.partition(":")
            model = models[model_name or "u1_equivariant"] if sampler_name == "imh" else None
            gen = torch.Generator(device=device).manual_seed(0)
            sampler = reg.get("sampler", sampler_name).build(action, params=params, device=device,
                                                             dtype=torch.float64, generator=gen, model=model)
            for _ in range(20):
                sampler.step(tune=True)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = 50
            for _ in range(n):
                sampler.step()
            if device == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / (n * sampler.n_chains)
            rows.append({"device": device, "sampler": name, "L": args.L, "s_per_config": dt})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--train-s", type=float, default=900.0)
    ap.add_argument("--samples", type=int, default=50000)
    ap.add_argument("--classical-samples", type=int, default=None,
                    help="measured configurations of each classical sampler (default: --samples)")
    ap.add_argument("--heatbath-samples", type=int, default=None,
                    help="measured configurations of the heatbath (default: --classical-samples)")
    ap.add_argument("--therm", type=int, default=None, help="thermalisation steps of the classical samplers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_u1_flow")
    ap.add_argument("--classical", nargs="*", default=[])
    ap.add_argument("--no-flow", action="store_true")
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lattgen_u1.exact import exact_results

    exact = exact_results(Lattice([args.L, args.L]), args.beta)
    rows = []
    if args.cost:
        rows = cost(args)
    else:
        for name in args.classical:
            rows.append(run_classical(name, args, exact))
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_flow:
            rows.append(run_flow(args, exact))
    for row in rows if args.cost or args.no_flow else rows[-1:]:
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
