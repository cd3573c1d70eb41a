"""The flow entry of bench_cpn.py: train cpn_flow (or cpn_decimated) by reverse KL for a CPU-time budget, then imh.

``--flow v1`` trains the first version of the flow (bench/cpn_flow_v1.py, Haar-uniform cube
coordinates) instead, for before/after ratios at equal CPU budget in one run; the training clock
is CPU time of this process (``train.clock = "cpu"``), so a loaded machine does not shrink it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from bench_cpn import NAMES

from lattgen import Lattice, make_generator
from lattgen.analysis import analyse_chain
from lattgen.evaluation import evaluate
from lattgen.observable import measure_all
from lattgen.registry import get_registry
from lattgen.sampler import run_chain
from lattgen.train import train


def run_flow(args, summary):
    reg = get_registry()
    lat = Lattice([args.L, args.L])
    action = reg.get("action", "cpn").build(lat, params={"N": args.N, "beta": args.beta})
    if args.flow == "v1":
        from cpn_flow_v1 import CPNFlowModel as FlowV1

        model = FlowV1(lat, args.N, n_layers=args.layers, hidden=args.hidden)
    else:
        params = {"n_layers": args.layers, "hidden": args.hidden}
        if args.path_gradient:
            params["path_gradient"] = True
        if args.directions:
            params["directions"] = args.directions
        model = reg.get("model", "cpn_decimated" if args.flow == "decimated" else "cpn_flow").build(action, params=params)
    label = "cpn_decimated+imh" if args.flow == "decimated" else f"cpn_flow({args.flow})+imh"
    from lattgen.config import resolve_train

    raw_cfg = {"max_time_s": args.train_s, "batch_size": args.batch, "lr": args.lr, "eval_batch": 256,
               "threads": 1, "dtype": args.dtype, "log_every": 50, "checkpoint_every_s": 1e9, "clock": "cpu"}
    cfg = resolve_train(raw_cfg, "train")
    t0 = time.process_time()
    out = Path(args.out) if args.out else None
    pre_steps = 0
    if args.pretrain_l:  # curriculum: a share of the budget at a smaller L, then the weights move up
        small = reg.get("action", "cpn").build(Lattice([args.pretrain_l] * 2), params={"N": args.N, "beta": args.beta})
        model.relattice(small.lattice)
        pre_cfg = resolve_train({**raw_cfg, "max_time_s": args.train_s * args.pretrain_fraction}, "train")
        pre_steps = train(model, small, pre_cfg, out_dir=None, generator=make_generator(5)).step
        model.relattice(lat)
        cfg = resolve_train({**raw_cfg, "max_time_s": args.train_s - (time.process_time() - t0)}, "train")
    result = train(model, action, cfg, out_dir=out, generator=make_generator(0))
    train_cpu = time.process_time() - t0
    model = model.double().eval()
    fresh = evaluate(model, action, 4096, make_generator(2), batch_size=256)  # 4096 fresh proposals
    obs = {n: reg.get("observable", n, field="sphere").build(lat) for n in NAMES}
    sampler = reg.get("sampler", "imh").build(action, params={"n_chains": 16, "batch_size": 64, "translate": True},
                                              device="cpu", dtype=torch.float64, generator=make_generator(1),
                                              model=model)
    t1 = time.perf_counter()
    chain = run_chain(sampler, measure_all(obs), args.samples, n_therm=50)
    wall = time.perf_counter() - t1
    info = chain.info
    extra = {"train_cpu_s": round(train_cpu, 1), "train_steps": result.step, "pretrain_steps": pre_steps,
             "pretrain": [args.pretrain_l, args.pretrain_fraction] if args.pretrain_l else None,
             "acceptance": chain.acceptance, "longest_rejection_run": info.get("longest_rejection_run"),
             "steps_per_chain": args.samples // sampler.n_chains,
             "ess_fresh": fresh["ess"], "expected_acceptance": fresh["acceptance"],
             "log_w_var": fresh["log_w_var"], "flow": args.flow, "layers": args.layers, "hidden": args.hidden, "batch": args.batch}
    return summary(label, args.N, args.L, args.beta, analyse_chain(chain, obs), wall, extra)
