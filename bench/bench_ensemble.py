"""The cost of saving an ensemble: the same HMC run without saving, saving raw, saving gzipped.

    python bench/bench_ensemble.py                  # phi^4 L = 16, 16 chains, 1000 steps, twice each
    python bench/bench_ensemble.py --steps 200      # a quick check that it runs

The variants alternate so that other load on the machine hits them alike; the sampling wall time
(results' ``wall_time_s``: the measured steps, writing included) and the file size are printed
as JSON, then ``lattgen.api.analyse`` re-analyses the gzipped ensemble and checks it reproduces
the live results exactly. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from lattgen import api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="measured steps per chain")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_chains = 16
    cfg = {"action": {"name": "phi4", "lattice": [16, 16], "beta": 0.55, "lam": 0.5},
           "sampler": {"name": "hmc", "n_chains": n_chains},
           "run": {"n_samples": args.steps * n_chains, "n_therm": 100, "seed": 1}}
    out: dict = {"raw_data_MB": args.steps * n_chains * 256 * 8 / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, save, compress in (("none", False, True), ("raw", True, False), ("gzip", True, True)):
                run = api.sample(cfg, out=f"{tmp}/{name}", save_configs=save, compress=compress, force=True)
                out.setdefault(f"{name}_s", []).append(round(run.wall_time_s, 3))
                if save:
                    out[f"{name}_MB"] = round(os.path.getsize(run.ensemble) / 1e6, 2)
        t0 = time.perf_counter()
        again = api.analyse(f"{tmp}/gzip/ensemble.h5")
        out["analyse_s"] = round(time.perf_counter() - t0, 3)
        out["analyse_equals_live"] = again.observables == run.observables
    print(json.dumps(out))


if __name__ == "__main__":
    main()
