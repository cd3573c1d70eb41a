"""Cost of one proposal for the three model families, as ratios to the affine flow, in one run.

Per configuration, under ``torch.no_grad`` (what the IMH sampler does), at L = 8 by default:

* ``affine`` (lattgen_flows, if registered): ``sample`` = one pass through every coupling net;
  also the ``equivariant`` flow's sample, if registered.
* ``autoregressive``: ``sample`` = V sequential site steps; ``cached`` (default) evaluates the
  masked net at the new site only, on cached hidden columns; ``full`` reruns the whole net at
  every step (V full passes). ``log_prob`` = ONE parallel pass. Also the Z2-equivariant variant
  (net on the context and its negation).
* ``vae``: ``sample`` = a decoder pass for phi, one encoder pass and K - 1 more decoder
  evaluations for the importance estimate of q; shown for K = 1, 4 (the default) and 16.

Also the cost of one reverse-KL training step (sample with gradients + backward) for the two
exact-density models. Untrained models (default options): the cost does not depend on the
weights. Each timing is the median of ``--repeats`` calls after one warm-up call; all in one
process, so the ratios are meaningful on a noisy machine.

    python bench/bench_families.py                    # L = 8, batch 256, float32, 1 thread
    python bench/bench_families.py --L 16 --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lattgen import Lattice
from lattgen.registry import get_registry


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sampling(model, n: int, seed: int) -> Callable[[], object]:
    g = torch.Generator().manual_seed(seed)

    def run():
        with torch.no_grad():
            return model.sample(n, g)

    return run


def density(model, phi: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return model.log_prob(phi)

    return run


def training_step(model, action, n: int, seed: int) -> Callable[[], object]:
    """One reverse-KL step's work: sample with gradients, loss, backward (no optimiser)."""
    g = torch.Generator().manual_seed(seed)

    def run():
        model.zero_grad(set_to_none=True)
        phi, log_q = model.sample(n, g)
        (log_q + action(phi)).mean().backward()

    return run


def vae_default_k(registry) -> int:
    return {p.name: p.default for p in registry.get("model", "vae").params}["n_importance"]


def build(registry, name: str, action, dtype, **params):
    return registry.get("model", name).build(action, params=params).to(dtype)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--skip-full", action="store_true", help="skip the slow V-full-pass sampler")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    reg = get_registry()
    lattice = Lattice([args.L, args.L])
    action = reg.get("action", "phi4").build(lattice, params={"beta": 0.577, "lam": 0.5})
    n, reps = args.batch, args.repeats
    rows: list[dict] = []

    def record(model_label: str, op: str, seconds: float, passes: str):
        rows.append({"model": model_label, "op": op, "ms_batch": 1e3 * seconds,
                     "us_config": 1e6 * seconds / n, "passes": passes})

    phi = torch.randn(n, *lattice.shape, dtype=dtype)
    if "affine" in reg.names("model"):
        flow = build(reg, "affine", action, dtype)
        n_layers = {p.name: p.default for p in reg.get("model", "affine").params}.get("n_layers", "?")
        record("affine", "sample", median_seconds(sampling(flow, n, 1), reps), f"{n_layers} coupling nets")
        record("affine", "log_prob", median_seconds(density(flow, phi), reps), f"{n_layers} coupling nets")
        record("affine", "train step", median_seconds(training_step(flow, action, n, 2), reps), "fwd + bwd")
    if "equivariant" in reg.names("model"):
        flow = build(reg, "equivariant", action, dtype)
        record("equivariant flow", "sample", median_seconds(sampling(flow, n, 1), reps),
               "free-field layer + symmetrised couplings")

    ar = build(reg, "autoregressive", action, dtype)
    v = lattice.volume
    record("autoregressive", "sample (cached)", median_seconds(sampling(ar, n, 1), reps),
           f"{v} site steps = 1 pass of work")
    if not args.skip_full:
        ar.flow.sampling = "full"
        record("autoregressive", "sample (full)", median_seconds(sampling(ar, n, 1), 1), f"{v} full passes")
        ar.flow.sampling = "cached"
    record("autoregressive", "log_prob", median_seconds(density(ar, phi), reps), "1 pass")
    record("autoregressive", "train step", median_seconds(training_step(ar, action, n, 2), reps), "fwd + bwd")
    ar_eq = build(reg, "autoregressive", action, dtype, z2="equivariant")
    record("autoregressive z2", "sample (cached)", median_seconds(sampling(ar_eq, n, 1), reps),
           f"{v} site steps, 2x batch")

    for k in (1, 4, 16):
        vae = build(reg, "vae", action, dtype, n_importance=k)
        record(f"vae K={k}", "sample", median_seconds(sampling(vae, n, 1), reps), f"{k} dec + 1 enc")
        if k == vae_default_k(reg):
            record(f"vae K={k}", "log_prob", median_seconds(density(vae, phi), reps), f"{k} dec + 1 enc")

    base = next((r["ms_batch"] for r in rows if r["model"] == "affine" and r["op"] == "sample"), None)
    print(f"L = {args.L}, batch {n}, {args.dtype}, {args.threads} thread(s), median of {reps}")
    print(f"{'model':18s} {'operation':16s} {'ms/batch':>9s} {'us/config':>10s} {'x affine sample':>16s}  passes")
    for r in rows:
        ratio = f"{r['ms_batch'] / base:.2f}" if base else "-"
        r["ratio_to_affine_sample"] = r["ms_batch"] / base if base else None
        print(f"{r['model']:18s} {r['op']:16s} {r['ms_batch']:9.1f} {r['us_config']:10.1f} {ratio:>16s}  {r['passes']}")
    by = {(r["model"], r["op"]): r["ms_batch"] for r in rows}
    if ("autoregressive", "sample (full)") in by:
        print(f"cached vs full autoregressive sampling: {by[('autoregressive', 'sample (full)')] / by[('autoregressive', 'sample (cached)')]:.1f}x faster")
    return rows


if __name__ == "__main__":
    main()
