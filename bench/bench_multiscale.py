"""Acceptance against training time at one large lattice: single-scale flow, `multigrid`, curriculum.

Trains the given configs (``lattgen train``, one process each, ``--parallel`` at a time, so
runs that share the machine share it equally), then plots the expected IMH acceptance of each
run's metrics against *total* training time: a curriculum run's curve starts when its final
stage (the target lattice) starts, after the earlier stages' seconds (``curriculum.json``).

    python bench/bench_multiscale.py --L 16      # bench/configs/L16_{single,multigrid,curriculum}.toml
    python bench/bench_multiscale.py --L 32
    python bench/bench_multiscale.py --plot-only --runs single=runs/L16_single curriculum=runs/L16_curriculum

Prints a Markdown table of the acceptance reached by given times and writes
``docs/img/multiscale_L<L>.png`` (or ``--png``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lattgen.config import load_toml
from lattgen.curriculum import read_record
from lattgen.plots import pyplot, save_figure
from lattgen.train import METRICS, read_metrics

KINDS = ("single", "multigrid", "curriculum")


def curve(run_dir: Path) -> tuple[list[float], list[float], float]:
    """(total training time, acceptance) of the run's final-lattice records, and the stage offset."""
    offset = sum(s["elapsed_s"] for s in read_record(run_dir) if s["dir"] != ".")
    records = read_metrics(run_dir / METRICS)
    return ([offset + r["time"] for r in records], [r.get("acceptance") or 0.0 for r in records], offset)


def acceptance_by(times: list[float], acc: list[float], t: float) -> float | None:
    """The last acceptance recorded by total training time t (+1%: the final record comes just
    after the budget); None before the first record."""
    seen = [a for s, a in zip(times, acc) if s <= 1.01 * t]
    return seen[-1] if seen else None


def train_all(configs: dict[str, Path], out_root: Path, parallel: int) -> dict[str, Path]:
    """``lattgen train CONFIG --out out_root/<name>`` for every config, ``parallel`` at a time."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    runs = {name: out_root / name for name in configs}
    pending = list(configs.items())
    active: list[subprocess.Popen] = []
    while pending or active:
        while pending and len(active) < parallel:
            name, cfg = pending.pop(0)
            print(f"training {name}: {cfg} -> {runs[name]}", flush=True)
            active.append(subprocess.Popen([sys.executable, "-m", "lattgen", "train", str(cfg), "--out",
                                            str(runs[name])], env=env, stdout=subprocess.DEVNULL))
        active[0].wait()
        if active[0].returncode:
            raise SystemExit(f"training failed (exit {active[0].returncode}): {active[0].args}")
        active.pop(0)
    return runs


def plot(runs: dict[str, Path], title: str, png: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.3))
    for name, run in runs.items():
        times, acc, offset = curve(run)
        line, = ax.plot(times, acc, marker="o", ms=2.5, label=name)
        if offset:
            ax.axvline(offset, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("training time [s] (all stages)")
    ax.set_ylabel("expected IMH acceptance")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    png.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, png)


def table(runs: dict[str, Path], marks: list[float]) -> str:
    lines = ["| run | steps (final stage) | " + " | ".join(f"by {t:g} s" for t in marks) + " |",
             "|---" * (len(marks) + 2) + "|"]
    for name, run in runs.items():
        times, acc, _ = curve(run)
        steps = read_metrics(run / METRICS)[-1]["step"] if times else 0
        cells = [acceptance_by(times, acc, t) for t in marks]
        lines.append(f"| {name} | {steps} | " + " | ".join("—" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, default=16, help="lattice size of bench/configs/L<L>_<kind>.toml")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), help="which configs to train")
    ap.add_argument("--out", type=Path, default=Path("runs"), help="run directories go to OUT/L<L>_<kind>")
    ap.add_argument("--parallel", type=int, default=2, help="training processes at a time")
    ap.add_argument("--plot-only", action="store_true", help="do not train; plot --runs")
    ap.add_argument("--runs", nargs="*", default=[], metavar="NAME=DIR", help="run directories to plot")
    ap.add_argument("--marks", type=float, nargs="+", default=None, help="times for the table [s]")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.plot_only:
        runs = {k: Path(v) for k, v in (r.rsplit("=", 1) for r in args.runs)}
    else:
        configs = {f"L{args.L}_{k}": ROOT / "bench" / "configs" / f"L{args.L}_{k}.toml" for k in args.kinds}
        missing = [str(c) for c in configs.values() if not c.is_file()]
        if missing:
            raise SystemExit(f"no such config: {', '.join(missing)}")
        runs = train_all(configs, args.out, args.parallel)
    if not runs:
        raise SystemExit("nothing to plot: give --runs NAME=DIR ... or train configs")
    last = max(max(curve(r)[0], default=0.0) for r in runs.values())
    marks = args.marks or [round(last * f) for f in (0.25, 0.5, 0.75, 1.0)]
    print(table(runs, marks))
    action = load_toml(next(iter(runs.values())) / "config.toml")["action"]
    title = f"{action['name']}, L = {'x'.join(map(str, action['lattice']))}, " + ", ".join(
        f"{k} = {v}" for k, v in action.items() if k not in ("name", "lattice"))
    png = args.png or ROOT / "docs" / "img" / f"multiscale_L{args.L}.png"
    plot(runs, title, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
