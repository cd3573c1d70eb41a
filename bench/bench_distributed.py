"""Data-parallel training throughput: 1 process x 1 thread against N gloo ranks x 1 thread.

    python bench/bench_distributed.py                              # affine, L = 16, global batch 256, 30 s each
    python bench/bench_distributed.py --seconds 3 --repeats 1      # a quick check that it runs
    python bench/bench_distributed.py --model equivariant --nproc 2 --seconds 60 --repeats 3

Both sides run ``lattgen.train.train`` (the code ``lattgen train`` runs) on the same model,
action and *global* batch for ``--seconds`` of training time each: the single process as a
plain ``python`` process with one torch thread, the data-parallel side under ``python -m
torch.distributed.run --standalone --nproc_per_node=N`` (gloo, one thread per rank, the global
batch split over the ranks, gradients averaged by DistributedDataParallel). Metrics are
reduced to a minimum (one record at the end on a tiny evaluation batch) and nothing is written,
so the number is the optimiser loop's: configurations per second = steps x global batch /
training seconds (rank 0's clock; process start, imports and DDP set-up are not counted). The
two sides alternate (1, N, 1, N, ...) so that other load on the machine hits both alike; the
ratio of the medians is printed. Goal on 2 cores: N = 2 at >= 1.6 x the single process.

Also printed: CPU seconds per 1000 configurations, summed over the ranks (process CPU time of
the train() call, communication threads included, waiting excluded). Their ratio is the
data-parallel work overhead and bounds the speedup on idle cores, N x (1-process CPU/config) /
(N-rank CPU/config); unlike the wall-clock ratio it is not much moved by other load.

Run it on a quiet machine: with other jobs on the cores the ranks wait for each other at every
all-reduce, and the ratio measures the load, not the code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MARK = "BENCH_RESULT "


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs, values parsed as TOML (as the CLI's --set): 16, 2e-3, true, [8, 8]."""
    from lattgen.config import parse_value

    return {key.strip(): parse_value(raw.strip()) for key, _, raw in (i.partition("=") for i in items)}


def worker(args) -> None:
    """One side of the measurement (single process, or every rank under torchrun)."""
    import torch

    from lattgen import Lattice, distributed
    from lattgen.build import make_generator
    from lattgen.registry import get_registry
    from lattgen.rundir import seeded_model

    torch.set_num_threads(1)
    distributed.init(args.device)
    reg = get_registry()
    action = reg.get("action", "phi4").build(Lattice([args.L, args.L]), params={"beta": args.beta, "lam": args.lam})
    model = seeded_model({"name": args.model, **parse_set(args.set)}, action, 0, reg)
    from lattgen.train import train

    cfg = {"max_time_s": args.seconds, "batch_size": args.batch, "log_every": 10**9,
           "checkpoint_every": 10**9, "eval_batch": max(2, distributed.world()), "dtype": args.dtype}
    cpu0 = time.process_time()
    result = train(model, action, cfg, generator=make_generator(0, args.device), device=args.device)
    cpu = sum(distributed.all_gather_object(time.process_time() - cpu0))  # every rank's threads
    if distributed.is_main():
        configs = result.step * args.batch
        print(MARK + json.dumps({"world": distributed.world(), "steps": result.step,
                                 "seconds": result.elapsed_s, "configs_per_s": configs / result.elapsed_s,
                                 "cpu_s_per_kconfig": 1000 * cpu / configs}), flush=True)


def launch(args, nproc: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    me = [os.path.abspath(__file__), "--worker", *sys.argv[1:]]
    if nproc == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *me]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="affine")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model parameter")
    p.add_argument("--L", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.635)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seconds", type=float, default=30.0, help="training seconds per measurement")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (gloo); cuda runs one rank per GPU (NCCL)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.worker:
        worker(args)
        return
    print(f"{args.model}, L = {args.L}, global batch {args.batch}, {args.dtype}, {args.seconds:g} s per run; "
          f"1 process x 1 thread vs {args.nproc} {'gloo' if args.device == 'cpu' else 'NCCL'} ranks x 1 thread")
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    cpu: dict[int, list[float]] = {1: [], args.nproc: []}
    t0 = time.perf_counter()
    for rep in range(args.repeats):
        for nproc in (1, args.nproc):
            r = launch(args, nproc)
            rates[nproc].append(r["configs_per_s"])
            cpu[nproc].append(r["cpu_s_per_kconfig"])
            print(f"  repeat {rep + 1}: {nproc} process(es): {r['steps']} steps in {r['seconds']:.1f} s = "
                  f"{r['configs_per_s']:.1f} configurations/s, {r['cpu_s_per_kconfig']:.2f} CPU s per 1000",
                  flush=True)
    one, many = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    print(f"median configurations/s: 1 process {one:.1f}, {args.nproc} ranks {many:.1f}; "
          f"ratio {many / one:.2f} (goal >= {0.8 * args.nproc:.1f})  [{time.perf_counter() - t0:.0f} s wall]")
    c1, cn = statistics.median(cpu[1]), statistics.median(cpu[args.nproc])
    print(f"median CPU s per 1000 configurations: 1 process {c1:.2f}, {args.nproc} ranks {cn:.2f} (all ranks); "
          f"speedup bound on idle cores {args.nproc * c1 / cn:.2f}")


if __name__ == "__main__":
    main()
