"""Trainer throughput: ``lattgen.train.train`` against a minimal hand-written reverse-KL loop.

    python bench/bench_train.py                       # affine (16 couplings, [8, 8]), L = 8, batch 256
    python bench/bench_train.py --model equivariant --steps 60 --repeats 5 --threads 2
    python bench/bench_train.py --device cuda --steps 300

Both run the same architecture from the same initial weights and seed for ``--steps`` optimiser
steps: the minimal loop is ``loss = (log_q + S).mean(); zero_grad; backward; clip; Adam step``;
``train()`` runs with its defaults (metrics every 50 steps with a 1024-sample evaluation,
checkpoint every 500 steps and at the end, model.pt), into a temporary run directory, and is
timed as a whole call, so every overhead it has is counted. The two are interleaved
(loop, train, loop, train, ...) so that load from other processes hits both alike; the ratio of
the medians of steps/s is reported (goal: train() >= 0.9 x the minimal loop), in wall time and
in this process's CPU time (less sensitive to other processes on a shared machine; the same as
wall time x threads when the process has the cores to itself). Without a
registered ``--model`` it falls back to a local affine-coupling flow of the same shape.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time

import torch

from lattgen import Lattice
from lattgen.build import make_generator
from lattgen.config import parse_value
from lattgen.train import train


def parse_set(items: list[str]) -> dict:
    """--set key=value pairs, values parsed as TOML (as the CLI's --set): 16, 2e-3, true, [8, 8]."""
    return {key.strip(): parse_value(raw.strip()) for key, _, raw in (i.partition("=") for i in items)}


def build(args):
    """(action, model) from the registry; a local affine flow if the model is not registered."""
    from lattgen.registry import get_registry

    reg = get_registry()
    lattice = Lattice([args.L, args.L])
    action = reg.get("action", "phi4").build(lattice, params={"beta": args.beta, "lam": args.lam})
    torch.manual_seed(0)
    if args.model in reg.names("model"):
        model = reg.get("model", args.model).build(action, params=parse_set(args.set), where="model")
        return action, model, args.model
    return action, local_affine(lattice), "local-affine"


def local_affine(lattice: Lattice, n_layers: int = 16, hidden: int = 8):
    """Checkerboard affine couplings with conv conditioners (the tutorial flow, arXiv 2101.08176)."""
    from torch import nn

    from lattgen.model import Bijection, Composition, FlowModel

    class Coupling(Bijection):
        def __init__(self, parity):
            super().__init__()
            self.register_buffer("mask", lattice.checkerboard(parity))
            self.net = nn.Sequential(
                nn.Conv2d(1, hidden, 3, padding=1, padding_mode="circular"), nn.LeakyReLU(),
                nn.Conv2d(hidden, hidden, 3, padding=1, padding_mode="circular"), nn.LeakyReLU(),
                nn.Conv2d(hidden, 2, 3, padding=1, padding_mode="circular"), nn.Tanh())

        def forward_and_log_det(self, z):
            frozen = self.mask * z
            s, t = self.net(frozen[:, None]).unbind(1)
            s, t = (1 - self.mask) * s, (1 - self.mask) * t
            return frozen + (1 - self.mask) * z * torch.exp(s) + t, s.flatten(1).sum(1)

        def inverse_and_log_det(self, phi):
            frozen = self.mask * phi
            s, t = self.net(frozen[:, None]).unbind(1)
            s, t = (1 - self.mask) * s, (1 - self.mask) * t
            return frozen + (1 - self.mask) * (phi - t) * torch.exp(-s), -s.flatten(1).sum(1)

    return FlowModel(lattice, Composition([Coupling(i % 2) for i in range(n_layers)]))


def minimal_loop(model, action, steps: int, batch: int, lr: float, clip: float, device) -> tuple[float, float]:
    """The reference: the shortest correct reverse-KL loop. Returns steps/s in wall and CPU time."""
    gen = make_generator(1, device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        phi, log_q = model.sample(batch, gen)
        loss = (log_q + action(phi)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    _sync(device)
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def trainer(model, action, steps: int, batch: int, lr: float, clip: float, device) -> tuple[float, float]:
    """``train()`` with default logging/checkpointing into a temporary run directory: steps/s
    in wall and CPU time."""
    cfg = {"max_steps": steps, "batch_size": batch, "lr": lr, "grad_clip": clip}
    with tempfile.TemporaryDirectory() as out:
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        train(model, action, cfg, out_dir=out, generator=make_generator(1, device), device=device)
        _sync(device)
        return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="affine")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model parameter")
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--beta", type=float, default=0.577)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5, help="untimed minimal-loop steps first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    action, model0, name = build(args)
    model0 = model0.to(args.device)
    minimal_loop(copy.deepcopy(model0), action, args.warmup, args.batch, args.lr, args.clip, args.device)
    loop_rates, train_rates = [], []
    for rep in range(args.repeats):
        loop_rates.append(minimal_loop(copy.deepcopy(model0), action, args.steps, args.batch, args.lr,
                                       args.clip, args.device))
        train_rates.append(trainer(copy.deepcopy(model0), action, args.steps, args.batch, args.lr,
                                   args.clip, args.device))
        print(f"repeat {rep}: minimal loop {loop_rates[-1][0]:.2f} steps/s ({loop_rates[-1][1]:.2f} per CPU s), "
              f"train() {train_rates[-1][0]:.2f} steps/s ({train_rates[-1][1]:.2f} per CPU s)", flush=True)
    result = {"model": name, "L": args.L, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
              "threads": args.threads, "device": args.device}
    for i, clock in enumerate(("wall", "cpu")):
        loop_med = statistics.median(r[i] for r in loop_rates)
        train_med = statistics.median(r[i] for r in train_rates)
        result[clock] = {"minimal_loop_steps_per_s": loop_med, "train_steps_per_s": train_med,
                         "ratio": train_med / loop_med,
                         "per_repeat_ratio": [t[i] / m[i] for t, m in zip(train_rates, loop_rates)]}
    if args.json:
        print(json.dumps(result))
    w, c = result["wall"], result["cpu"]
    print(f"{name}, L = {args.L}, batch {args.batch}, {args.steps} steps x {args.repeats} (interleaved), "
          f"{args.threads} thread(s), {args.device}: minimal loop {w['minimal_loop_steps_per_s']:.2f} steps/s, "
          f"train() {w['train_steps_per_s']:.2f} steps/s; ratio train()/loop: wall {w['ratio']:.3f}, "
          f"CPU time {c['ratio']:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
