"""GPU benchmark in one go: training throughput and IMH proposals per second at L = 16, 32, 64.

    python bench/bench_gpu.py                                  # cuda: affine and multigrid, L = 16, 32, 64
    python bench/bench_gpu.py --out gpu_bench.json             # also write every number as JSON
    python bench/bench_gpu.py --device cpu --quick             # smoke test: tiny sizes on the CPU
    python bench/bench_gpu.py affine equivariant --L 32 64 --batch 2048

Status: written and smoke-tested on the CPU only; it has not yet run on a GPU (docs/benchmarks.md).

For every model named on the command line (default: ``affine multigrid``; a name the registry
does not know is skipped with a message) and every L, on phi^4 at the xi ~ L/4 point of
docs/physics.md (lam = 0.5; beta 0.635, 0.661, 0.674 at L = 16, 32, 64):

* training: ``lattgen.train.train`` (the code ``lattgen train`` runs) in float32 on ``--batch``
  configurations per step, first ``--warmup`` steps (allocator, kernel selection), then
  ``--seconds`` of training timed by the trainer's own clock (the final metrics record syncs the
  device, so queued work is counted); configurations/s = steps x batch / seconds. Peak device
  memory is reported;
* with ``--compile`` (default on CUDA), at ``--compile-L`` (default 32) only: the same loss in a
  minimal loop (sample, loss, backward, Adam), eager and with the flow's ``forward_and_log_det``
  under ``torch.compile``, to decide whether compiling pays (compile time reported separately);
  models without a ``flow`` are skipped there;
* sampling: the ``imh`` sampler with the (untrained) model, ``--chains`` chains and
  ``--imh-batch`` proposals per chain per model call; proposals/s = steps x chains / seconds
  after one warm-up refill (model calls, the float64 action, accept/reject on the device,
  no observables).

Every measurement is guarded: an error (out of memory, a model that does not fit a size) is
printed and recorded, and the run goes on. Expected wall time on one H200 with the defaults:
about 3-5 minutes (6 timed training runs and 6 sampling runs of ``--seconds`` = 5 s each, plus
warm-ups, and 2 compilations of ~1 minute each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

#: beta on the xi ~ L/4 line at lam = 0.5 (docs/physics.md); small quick sizes get the L = 6, 8 values
BETA = {4: 0.5, 6: 0.536, 8: 0.577, 16: 0.635, 32: 0.661, 64: 0.674}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(reg, name: str, L: int, device: torch.device):
    from lattgen import Lattice
    from lattgen.rundir import seeded_model

    beta = BETA.get(L, 0.65)
    action = reg.get("action", "phi4").build(Lattice([L, L]), params={"beta": beta, "lam": 0.5})
    model = seeded_model({"name": name}, action, 0, reg)
    return action, model.to(device)


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_train(reg, name, L, args, device) -> dict:
    """configurations/s of train() after a warm-up call."""
    from lattgen.build import make_generator
    from lattgen.train import train

    action, model = build(reg, name, L, device)
    reset_peak(device)
    base = {"batch_size": args.batch, "log_every": 10**9, "checkpoint_every": 10**9, "eval_batch": 2,
            "dtype": "float32", "schedule": "constant"}
    gen = make_generator(0, device)
    train(model, action, dict(base, max_steps=args.warmup), generator=gen, device=device)
    result = train(model, action, dict(base, max_time_s=args.seconds), generator=gen, device=device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"steps": result.step, "seconds": result.elapsed_s,
            "configs_per_s": result.step * args.batch / result.elapsed_s,
            "steps_per_s": result.step / result.elapsed_s, "parameters": n_params,
            "peak_memory_mb": peak_memory_mb(device)}


def minimal_loop_rate(model, action, batch, steps, device, forward) -> float:
    """configurations/s of sample -> loss -> backward -> Adam with ``forward`` as the flow."""
    from lattgen.model import standard_normal_log_prob

    gen = torch.Generator(device=device).manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        z = model.sample_latent(batch, gen)
        phi, log_det = forward(z)
        loss = (standard_normal_log_prob(z) - log_det + action(phi)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def bench_compile(reg, name, L, args, device) -> dict:
    """Eager against torch.compile'd flow in the same minimal loop."""
    action, model = build(reg, name, L, device)
    flow = getattr(model, "flow", None)
    if flow is None or not hasattr(model, "sample_latent"):
        return {"skipped": f"{name} has no flow/sample_latent to compile"}
    model.train()
    steps = args.compile_steps
    eager = minimal_loop_rate(model, action, args.batch, steps, device, flow.forward_and_log_det)
    compiled_fn = torch.compile(flow.forward_and_log_det)
    t0 = time.perf_counter()
    minimal_loop_rate(model, action, args.batch, 1, device, compiled_fn)  # compiles (fwd + bwd)
    compile_s = time.perf_counter() - t0
    compiled = minimal_loop_rate(model, action, args.batch, steps, device, compiled_fn)
    return {"eager_configs_per_s": eager, "compiled_configs_per_s": compiled,
            "speedup": compiled / eager, "compile_s": compile_s}


def bench_imh(reg, name, L, args, device) -> dict:
    """Proposals per second of the imh sampler (no observables)."""
    from lattgen_imh.imh import IMH

    from lattgen.build import make_generator

    action, model = build(reg, name, L, device)
    reset_peak(device)
    sampler = IMH(action, model=model, n_chains=args.chains, batch_size=args.imh_batch, device=device,
                  generator=make_generator(0, device), dtype=torch.float64)
    for _ in range(args.imh_batch):  # one refill: warm-up
        sampler.step(tune=True)
    sync(device)
    steps = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(args.imh_batch):
            sampler.step(tune=False)
        steps += args.imh_batch
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= args.seconds:
            break
    info = sampler.info()
    return {"steps": steps, "seconds": elapsed, "proposals_per_s": steps * args.chains / elapsed,
            "acceptance": info["acceptance"], "peak_memory_mb": peak_memory_mb(device)}


def guarded(fn, *a) -> dict:
    try:
        return fn(*a)
    except Exception as exc:  # noqa: BLE001 - one failed configuration must not end the run
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        traceback.print_exc(limit=2, file=sys.stderr)
        return {"error": msg}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def fmt(r: dict, key: str, unit: str) -> str:
    if "error" in r:
        return f"FAILED ({r['error']})"
    if "skipped" in r:
        return f"skipped ({r['skipped']})"
    return f"{r[key]:,.0f} {unit}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["affine", "multigrid"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes and budgets (a smoke test)")
    p.add_argument("--L", type=int, nargs="+", default=None, help="lattice sizes (default 16 32 64)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 1024; quick 16)")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="training warm-up steps (default 10)")
    p.add_argument("--chains", type=int, default=None, help="imh chains (default 256; quick 4)")
    p.add_argument("--imh-batch", type=int, default=None, help="imh steps per model call (default 64; quick 4)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="measure torch.compile (auto: on for cuda)")
    p.add_argument("--compile-L", type=int, default=None, help="the one L of the compile comparison (default 32)")
    p.add_argument("--compile-steps", type=int, default=None, help="timed steps of the minimal loops (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    q = args.quick
    args.L = args.L or ([4, 8] if q else [16, 32, 64])
    args.batch = args.batch or (16 if q else 1024)
    args.seconds = args.seconds if args.seconds is not None else (0.5 if q else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (2 if q else 10)
    args.chains = args.chains or (4 if q else 256)
    args.imh_batch = args.imh_batch or (4 if q else 64)
    args.compile_steps = args.compile_steps or (3 if q else 50)
    if args.compile_L is None:
        args.compile_L = 32 if 32 in args.L else args.L[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no GPU visible to torch; for a CPU smoke test run with --device cpu --quick")
    do_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        # torch's defaults, as `lattgen train` runs; --cudnn-benchmark to see if autotuning pays
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    from lattgen.registry import get_registry

    reg = get_registry()
    known = reg.names("model")
    models = []
    for m in args.models:
        if m in known:
            models.append(m)
        else:
            print(f"skipping model {m!r}: not registered (known: {', '.join(known)})")
    print(f"device {device} ({name}), torch {torch.__version__}; models {', '.join(models) or '(none)'}; "
          f"L {args.L}; training batch {args.batch}, {args.seconds:g} s per measurement", flush=True)
    results: dict = {"device": str(device), "device_name": name, "torch": torch.__version__,
                     "settings": {k: v for k, v in vars(args).items() if k != "models"}, "train": {},
                     "compile": {}, "imh": {}}
    t_start = time.perf_counter()
    for model in models:
        for L in args.L:
            key = f"{model}/L{L}"
            r = results["train"][key] = guarded(bench_train, reg, model, L, args, device)
            mem = f", peak {r['peak_memory_mb']:.0f} MiB" if r.get("peak_memory_mb") else ""
            print(f"train {key:>16}: {fmt(r, 'configs_per_s', 'configurations/s')}"
                  + (f" ({r['steps']} steps){mem}" if "steps" in r else ""), flush=True)
            r = results["imh"][key] = guarded(bench_imh, reg, model, L, args, device)
            print(f"imh   {key:>16}: {fmt(r, 'proposals_per_s', 'proposals/s')}", flush=True)
            if do_compile and L == args.compile_L:
                r = results["compile"][key] = guarded(bench_compile, reg, model, L, args, device)
                if "speedup" in r:
                    print(f"compile {key:>14}: eager {r['eager_configs_per_s']:,.0f}, compiled "
                          f"{r['compiled_configs_per_s']:,.0f} configurations/s (x{r['speedup']:.2f}; "
                          f"compiling took {r['compile_s']:.0f} s)", flush=True)
                else:
                    print(f"compile {key:>14}: {fmt(r, 'speedup', '')}", flush=True)
    results["wall_s"] = time.perf_counter() - t_start
    print(f"done in {results['wall_s']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
