"""Checkerboard couplings: the elementwise map on the active sites only against on every site.

    python bench/bench_coupling_sites.py                      # the issue-15 (d) recipe: L = 32, batch 8
    python bench/bench_coupling_sites.py --config bench/configs/L16_multigrid.toml --batch 64

``CheckerboardCoupling._couple`` gathers the active sites (half the lattice; a quarter or a
half for a multigrid level's fine sites) before the spline or affine map and scatters them back. The
"every site" variant is the code it replaced: the map on the whole lattice, then
``where(active, y, x)`` and a masked log-det sum. Both run the same model, weights and seed
(reverse-KL steps with Adam, the path gradient as configured), interleaved, in one process on
one thread; the ratio of the medians of CPU seconds per step is reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import tomllib
import torch
from lattgen_flows.coupling import CheckerboardCoupling

from lattgen.build import build_action, build_model
from lattgen.objectives import reverse_kl_objective


def every_site(self, x, inverse):
    """The previous ``_couple``: the map on every site, then the active ones kept."""
    self.check_input(x)
    params = self.conditioner(x.masked_fill(self.active, 0.0).unsqueeze(1))
    y, log_jac = self.transform(x.flatten(1), params.flatten(2), inverse)
    y, log_jac = y.view_as(x), log_jac.view_as(x)
    return torch.where(self.active, y, x), self.site_sum(log_jac.masked_fill(~self.active, 0.0))


def seconds_per_step(model, action, batch: int, steps: int) -> float:
    objective = reverse_kl_objective(model, action, batch, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    t = time.process_time()
    for _ in range(steps):
        loss = objective()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.process_time() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="bench/configs/L32_multigrid_zm_b8.toml")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with open(args.config, "rb") as fh:
        cfg = tomllib.load(fh)
    action = build_action(cfg["action"])
    model = build_model(cfg["model"], action).float()
    active = CheckerboardCoupling._couple
    times: dict[str, list[float]] = {"active sites": [], "every site": []}
    for _ in range(args.repeats):
        for name, impl in (("active sites", active), ("every site", every_site)):
            CheckerboardCoupling._couple = impl
            times[name].append(seconds_per_step(copy.deepcopy(model), action, args.batch, args.steps))
    CheckerboardCoupling._couple = active
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"config": args.config, "batch": args.batch, "s_per_step": med,
                      "speedup": med["every site"] / med["active sites"]}))


if __name__ == "__main__":
    main()
