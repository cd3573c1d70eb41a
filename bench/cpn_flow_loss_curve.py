"""Reverse-KL loss curve of cpn_flow for a short CPU budget (the diagnostics of docs/benchmarks.md, issue 13).

    python bench/cpn_flow_loss_curve.py --N 3 --L 4 --beta 1.1 --train-s 55 --model '{"stencils": [1]}'

Prints one line per metrics record (step, loss, ess, expected IMH acceptance, var log w): the
loss is KL(q||p) - log Z, so at one point the variants compare by their loss at equal CPU time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from lattgen import Lattice, make_generator
from lattgen.config import resolve_train
from lattgen.registry import get_registry
from lattgen.train import read_metrics, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=3)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--beta", type=float, default=1.1)
    ap.add_argument("--train-s", type=float, default=55)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--name", default="cpn_flow", help="model: cpn_flow or cpn_decimated")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"), help="training precision")
    ap.add_argument("--model", default="{}", help="model parameters as JSON (over n_layers 8, hidden [16, 16])")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reg = get_registry()
    action = reg.get("action", "cpn").build(Lattice([args.L] * 2), params={"N": args.N, "beta": args.beta})
    model = reg.get("model", args.name).build(action, params={"n_layers": 8, "hidden": [16, 16],
                                                               **json.loads(args.model)})
    cfg = resolve_train({"max_time_s": args.train_s, "batch_size": args.batch, "lr": args.lr, "eval_batch": 256, "threads": 1,
                         "dtype": args.dtype, "log_every": 50, "checkpoint_every_s": 1e9, "clock": "cpu"}, "train")
    with tempfile.TemporaryDirectory() as out:
        train(model, action, cfg, out_dir=out, generator=make_generator(0))
        for r in read_metrics(Path(out) / "metrics.jsonl"):
            print(json.dumps({k: r[k] for k in ("step", "time", "loss", "ess", "acceptance", "log_w_var")}))


if __name__ == "__main__":
    main()
