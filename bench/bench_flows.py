"""Benchmark a flow model on phi^4: reverse-KL training for a wall-time budget, acceptance against time.

    python bench/bench_flows.py --model equivariant --time 300 --L 8 --beta 0.577
    python bench/bench_flows.py --model affine --time 300 --set n_layers=16 --set 'hidden=[8, 8]'

Training: loss = mean(log q(phi) + S(phi)) over a batch of flow samples (reverse KL, arXiv
1904.12072), Adam, learning rate on a cosine in *wall time* over the budget, gradient clipping
(the minimal loop below), or with ``--trainer lattgen`` the project's trainer
``lattgen.train.train`` (its metrics are printed as they come, then the final evaluation).
Every ``--eval-every`` seconds (training clock paused) it draws ``--eval-samples`` proposals,
log w = -S - log q in float64, and runs one independence Metropolis-Hastings chain through
them: ``accept`` is that chain's acceptance, ``exp_acc`` the expected stationary IMH acceptance
of the same weights (U-statistic, ``lattgen.reweight.expected_imh_acceptance``), ``ess`` the
ESS fraction (sum w)^2 / (N sum w^2).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from lattgen import Lattice
from lattgen.config import parse_value
from lattgen.registry import get_registry


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs, values parsed as TOML (as the CLI's --set): 16, 2e-3, true, [8, 8]."""
    return {key.strip(): parse_value(raw.strip()) for key, _, raw in (i.partition("=") for i in items)}


@torch.no_grad()
def log_weights(model, action, n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """log w = -S(phi) - log q(phi) of n fresh proposals, float64."""
    out = []
    for start in range(0, n, batch):
        phi, log_q = model.sample(min(batch, n - start), generator)
        out.append(-action(phi.double()) - log_q.double())
    return torch.cat(out)


def imh_acceptance(logw: torch.Tensor, generator: torch.Generator) -> float:
    """Acceptance rate of an independence Metropolis chain through the proposals, in order."""
    u = torch.rand(len(logw), generator=generator, dtype=torch.float64).log().tolist()
    lw = logw.tolist()
    current, accepted = lw[0], 0
    for i in range(1, len(lw)):
        if u[i] < lw[i] - current:
            current = lw[i]
            accepted += 1
    return accepted / max(len(lw) - 1, 1)


def expected_acceptance(logw: torch.Tensor) -> float:
    """Stationary IMH acceptance from i.i.d. weights (lattgen.reweight), NaN if unavailable."""
    try:
        from lattgen.reweight import expected_imh_acceptance
    except ImportError:
        return float("nan")
    return float(expected_imh_acceptance(logw))


def ess_fraction(logw: torch.Tensor) -> float:
    """Normalised effective sample size of the importance weights."""
    w = torch.exp(logw - logw.max())
    return float(w.sum() ** 2 / (len(w) * (w * w).sum()))


def train(model, action, args, report) -> None:
    """Minimal reverse-KL loop with a wall-time cosine schedule; calls report(t, step, loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    t_train, step, next_eval = 0.0, 0, args.eval_every
    while (step < args.steps) if args.steps else (t_train < args.time):
        t0 = time.perf_counter()
        frac = step / args.steps if args.steps else min(t_train / args.time, 1.0)
        lr = args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        phi, log_q = model.sample(args.batch, gen)
        loss = (log_q + action(phi)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        t_train += time.perf_counter() - t0
        if not math.isfinite(loss.item()):
            raise SystemExit(f"loss is {loss.item()} at step {step}")
        clock = step if args.steps else t_train
        if clock >= next_eval or clock >= (args.steps or args.time):
            report(t_train, step, loss.item())
            next_eval += args.eval_every


def train_with_lattgen(model, action, args, report) -> None:
    """Train with the project's trainer (time or step budget), printing its metric records."""
    from lattgen.train import train as lattgen_train

    cfg = {"batch_size": args.batch, "lr": args.lr, "grad_clip": args.clip, "threads": args.threads,
           "log_every": args.log_every, "eval_batch": 1024}
    cfg.update({"max_steps": args.steps} if args.steps else {"max_time_s": args.time})
    t0 = time.perf_counter()

    def progress(step, _max_steps, metrics):
        if "acceptance" in metrics and metrics.get("step") == step:
            print(f"  [trainer] wall {time.perf_counter() - t0:7.1f} s step {step:6d} "
                  f"loss {metrics.get('loss', float('nan')):9.3f} acceptance {metrics['acceptance']:.3f}",
                  flush=True)

    result = lattgen_train(model, action, cfg, generator=torch.Generator().manual_seed(args.seed),
                           progress=progress)
    report(result.elapsed_s, result.step, result.metrics.get("loss", float("nan")))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="equivariant")
    p.add_argument("--time", type=float, default=300.0, help="training wall time, seconds")
    p.add_argument("--steps", type=int, default=0,
                   help="train for this many steps instead of --time (cosine over steps; --eval-every in steps)")
    p.add_argument("--L", type=int, default=8)
    p.add_argument("--d", type=int, default=2)
    p.add_argument("--beta", type=float, default=0.577)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-min", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--eval-every", type=float, default=30.0, help="seconds (or steps with --steps)")
    p.add_argument("--eval-samples", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="model parameter key=value")
    p.add_argument("--trainer", choices=("local", "lattgen"), default="local",
                   help="local: the minimal loop here; lattgen: lattgen.train.train")
    p.add_argument("--save", default=None, help="write the trained model's state_dict to this file")
    p.add_argument("--log-every", type=int, default=100, help="trainer metric records (--trainer lattgen)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    reg = get_registry()
    action = reg.get("action", "phi4").factory(Lattice([args.L] * args.d), beta=args.beta, lam=args.lam)
    model = reg.get("model", args.model).build(action, params=parse_set(args.set), where="model")
    n_par = sum(p.numel() for p in model.parameters())
    print(f"# model {args.model} {parse_set(args.set)}  parameters {n_par}  L={args.L} d={args.d} "
          f"beta={args.beta} lam={args.lam} batch={args.batch} lr={args.lr} threads={args.threads}")
    print(f"# {'time_s':>7} {'steps':>6} {'steps/s':>7} {'loss':>9} {'accept':>6} {'exp_acc':>7} {'ess':>6}")
    eval_gen = torch.Generator().manual_seed(args.seed + 1)

    def report(t, step, loss):
        logw = log_weights(model, action, args.eval_samples, 1024, eval_gen)
        acc = imh_acceptance(logw, eval_gen)
        print(f"  {t:7.1f} {step:6d} {step / t:7.2f} {loss:9.3f} {acc:6.3f} {expected_acceptance(logw):7.3f} "
              f"{ess_fraction(logw):6.3f}", flush=True)

    (train_with_lattgen if args.trainer == "lattgen" else train)(model, action, args, report)
    if args.save:
        torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
