"""Command-line interface: ``lattgen list | sample | analyse | export | train | compare | scale | scan``.

Every error a user can cause is a LattgenError, printed as one line (exit status 2) instead
of a traceback. Each run writes a directory: resolved config.toml, results.json, and more.

``torchrun --nproc_per_node=N -m lattgen train|sample|compare ...`` runs the command data-parallel
(``lattgen.distributed``): every process joins the process group once its config is resolved;
rank 0 alone writes files, prints and shows progress; other ranks print only errors.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from . import distributed, outdir
from .errors import LattgenError
from .memory import is_out_of_memory

console = Console()
err_console = Console(stderr=True)


def _error_prefix() -> str:
    """Errors of a torchrun worker other than rank 0 say which rank they come from."""
    return f"\\[rank {distributed.env_rank()}] " if distributed.secondary() else ""  # \\[: not rich markup


def print_error(message: str) -> None:
    """``error: MESSAGE`` on stderr as one line: the message is text, never rich markup
    (``[action]`` stays), and never wrapped."""
    err_console.print(f"{_error_prefix()}[bold red]error:[/bold red] {escape(str(message))}",
                      highlight=False, soft_wrap=True)


def os_error_message(exc: OSError) -> str:
    """'PATH: No space left on device' for an OSError the run could not avoid."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


class LattgenGroup(click.Group):
    """A click group that turns LattgenErrors (and OSErrors, out of memory) into one clear line
    and exit status 2, and releases the output directory's lock when the command ends."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LattgenError as exc:
            print_error(str(exc))
        except OSError as exc:  # a file the run could not read or write (disk full, permissions)
            print_error(os_error_message(exc))
        except KeyboardInterrupt:
            if not distributed.secondary():
                err_console.print("[yellow]interrupted[/yellow]: finished work was kept")
            ctx.exit(130)
        except Exception as exc:  # only allocation failures are handled here; the rest re-raised
            if not is_out_of_memory(exc):
                raise
            print_error(f"out of memory ({str(exc).strip().splitlines()[0][:160]}); use a smaller "
                        "lattice, fewer chains (sampler.n_chains) or a smaller batch (train.batch_size)")
        finally:
            outdir.release_all()
        ctx.exit(2)


@click.group(cls=LattgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lattgen")
def cli() -> None:
    """lattgen: generative models and classical samplers for lattice field theories."""


def default_out(kind: str) -> Path:
    return Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_out(out: Path | None, kind: str, force: bool = False) -> Path:
    """The output directory of command ``kind``, created and locked for this run; one holding
    another command's output, or a sample's results, is refused unless ``force``
    (``lattgen.outdir.claim``)."""
    out = Path(out) if out is not None else default_out(kind)
    outdir.claim(out, kind, force)
    return out


#: the --force option of every command that writes a directory
force_option = click.option("--force", is_flag=True,
                            help="overwrite what --out holds (train: start over instead of resuming)")


def load_config_with_overrides(config_path: str | None, overrides: tuple[str, ...]) -> dict[str, Any]:
    from .config import apply_overrides, load_toml

    raw = load_toml(config_path) if config_path is not None else {}
    return apply_overrides(raw, overrides)


class Progress:
    """A rich progress bar as a ``progress(done, total)`` callback."""

    def __init__(self, description: str | None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
        from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=err_console, transient=False, disable=distributed.secondary(),
        )
        # EntryProgress passes None: it adds one task per entry and phase instead
        self._task = self._bar.add_task(description, total=None, info="") if description else None

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def __call__(self, done: int, total: int | None, metrics: Mapping[str, Any] | None = None) -> None:
        info = ""
        if metrics:
            info = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        self._bar.update(self._task, completed=done, total=total, info=info)


# -- list -------------------------------------------------------------------------------------
@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--markdown", is_flag=True, help="configuration reference in Markdown")
@click.option("--kind", type=click.Choice(["action", "model", "layer", "sampler", "observable"]),
              multiple=True, help="only these kinds (repeatable)")
def list_cmd(as_json: bool, markdown: bool, kind: tuple[str, ...]) -> None:
    """Every registered action, model, layer, sampler and observable, with parameters."""
    from .listing import listing_dict, listing_markdown, print_listing
    from .registry import get_registry

    reg = get_registry()
    kinds = list(kind) or None
    if as_json:
        click.echo(json.dumps(listing_dict(reg, kinds), indent=2))
    elif markdown:
        click.echo(listing_markdown(reg, kinds))
    else:
        print_listing(reg, kinds, console)


# -- sample -----------------------------------------------------------------------------------
@cli.command("sample")
@click.argument("target", type=click.Path(exists=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override a config value (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output directory")
@click.option("--save-configs", is_flag=True,
              help="write the measured configurations to OUT/ensemble.h5 (HDF5, docs/ensembles.md)")
@click.option("--save-every", type=click.IntRange(min=1), default=1, metavar="K",
              help="with --save-configs: keep every K-th measured configuration")
@click.option("--no-compression", is_flag=True,
              help="with --save-configs: store the configurations uncompressed (faster, about 1.4x larger)")
@force_option
def sample_cmd(target: str, overrides: tuple[str, ...], out: Path | None, force: bool, save_configs: bool,
               save_every: int, no_compression: bool) -> None:
    """Sample TARGET: a CONFIG.toml, or a trained RUN_DIR (its model proposes, sampler imh)."""
    from . import api
    from .errors import ConfigError
    from .report import print_sample_report

    if not save_configs and (save_every != 1 or no_compression):
        raise ConfigError("--save-every and --no-compression apply to a saved ensemble: add --save-configs")
    plan = api.prepare_sample(target, overrides)
    distributed.init(plan.config["run"]["device"])
    out = prepare_out(out, "sample", force)
    if plan.note:
        console.print(plan.note, highlight=False)
    with Progress(f"sampling ({plan.config['sampler']['name']})") as bar:
        result = api.sample(plan, out=out, force=force, save_configs=save_configs, save_every=save_every,
                            compress=not no_compression, progress=bar)
    print_sample_report(result.results, console)
    console.print(f"wrote {out / 'results.json'}")


# -- analyse ----------------------------------------------------------------------------------
@cli.command("analyse")
@click.argument("ensemble", metavar="ENSEMBLE.h5", type=click.Path(exists=False))
@click.option("--observables", default=None, metavar="NAME,NAME",
              help="observables to measure (default: the ones the run measured)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output directory")
@force_option
def analyse_cmd(ensemble: str, observables: str | None, out: Path | None, force: bool) -> None:
    """Measure observables on a saved ensemble (sample --save-configs) with the same Gamma method."""
    from . import api
    from .reanalysis import open_checked
    from .report import print_sample_report

    names = [n.strip() for n in observables.split(",") if n.strip()] if observables else None
    open_checked(ensemble, names)[0].close()  # bad input fails before --out is created
    out = prepare_out(out, "analyse", force)
    with Progress("analysing") as bar:
        result = api.analyse(ensemble, names, out=out, force=force, progress=bar)
    print_sample_report(result.results, console)
    console.print(f"wrote {out / 'results.json'}")


# -- export -----------------------------------------------------------------------------------
@cli.command("export")
@click.argument("results", metavar="RESULTS", type=click.Path(exists=False))
@click.option("--pyerrors", "to_pyerrors", is_flag=True,
              help="pyerrors JSON (json.gz): one Obs per observable, the chains as replicas")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="file to write (default: pyerrors.json.gz beside the results)")
def export_cmd(results: str, to_pyerrors: bool, out: Path | None) -> None:
    """Export RESULTS (a results.json or its run directory: sample, analyse or compare) for other tools."""
    from . import api
    from .export import ExportError

    if not to_pyerrors:
        raise ExportError("choose the format to export: --pyerrors")
    console.print(f"wrote {api.export_pyerrors(results, out)}")


# -- train ------------------------------------------------------------------------------------
@cli.command("train")
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(exists=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override a config value (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run directory (resumes if it holds a checkpoint)")
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="initialise the model from a trained RUN_DIR (e.g. at a smaller L)")
@force_option
def train_cmd(config_path: str, overrides: tuple[str, ...], out: Path | None, init_from: Path | None,
              force: bool) -> None:
    """Train the [model] of CONFIG.toml on its [action] by reverse KL."""
    from . import api

    config = api.load_config(config_path, overrides, kind="train")
    distributed.init(config["run"]["device"])
    out = prepare_out(out, "train", force)
    with Progress(f"training ({config['model']['name']})") as bar:
        result = api.train(config, out=out, init_from=init_from, force=force, progress=bar)
    console.print(result.summary())
    console.print(f"run directory: {out}")


# -- compare ----------------------------------------------------------------------------------
@cli.command("compare")
@click.argument("config_path", metavar="[CONFIG.toml]", required=False, type=click.Path(exists=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override a config value (repeatable), e.g. compare.train_time_s=30")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="output directory (rerun with the same --out resumes, skipping finished entries)")
@force_option
def compare_cmd(config_path: str | None, overrides: tuple[str, ...], out: Path | None, force: bool) -> None:
    """Compare model families and classical samplers on one action, on equal terms.

    Without CONFIG.toml: the default theory's default point (with the built-in plugins, for
    example, phi^4 on 8x8 at beta = 0.577, lam = 0.5), every model registered for its field with
    the model sampler, plus the theory's classical samplers.
    """
    from . import api
    from .report import compare_tables, verdict_lines

    resolved = api.load_config(config_path, overrides, kind="compare")
    distributed.init(resolved["compare"]["device"])
    out = prepare_out(out, "compare", force)
    console.print(f"comparing {len(resolved['entries'])} entries: "
                  + ", ".join(e["label"] for e in resolved["entries"]) + f"  ->  {out}")
    with EntryProgress() as bar:
        summary = api.compare(resolved, out=out, force=force, progress=bar).summary
    wide = console if console.is_terminal else Console(width=max(console.width, 160), quiet=console.quiet)
    for table in compare_tables(summary):
        wide.print(table)
    for line in verdict_lines(summary):
        console.print(line, highlight=False)
    console.print(f"wrote {out / 'results.json'} and plots in {out}")


# -- scale ------------------------------------------------------------------------------------
@cli.command("scale")
@click.argument("config_path", metavar="[CONFIG.toml]", required=False, type=click.Path(exists=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override a config value (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output directory (resumable)")
@force_option
def scale_cmd(config_path: str | None, overrides: tuple[str, ...], out: Path | None, force: bool) -> None:
    """tau_int against xi along xi = L/4, and the dynamic exponent z of every entry."""
    from .registry import get_registry
    from .scaling import resolve_scale, run_scale

    reg = get_registry()
    resolved = resolve_scale(load_config_with_overrides(config_path, overrides), reg)
    distributed.init(resolved["points"][0]["compare"]["device"] if resolved["points"] else "cpu")
    out = prepare_out(out, "scale", force)
    with EntryProgress() as bar:
        result = run_scale(resolved, out, progress=bar)
    from rich.table import Table

    sc = result["scale"]
    x_name = sc.get("x_observable") or ("L" if sc.get("x") == "L" else sc["coupling"])
    table = Table(title=f"dynamic exponent: tau_int({result['figure_of_merit']}) = c {x_name}^z")
    for col in ("entry", "z", "chi^2/dof", "points"):
        table.add_column(col)
    for label, fit in result["fits"].items():
        table.add_row(label, f"{fit['z']:.2f} +- {fit['z_error']:.2f}", f"{fit['chi2_dof']:.2f}", str(fit["n_points"]))
    console.print(table)
    stats = sorted({k for r in result["rows"] for k in r if k.endswith(("_sign_flips", "_chains_without_flip"))})
    if stats:  # chain statistics (tunnelling between the ordered phases) per point
        flips = Table(title="tunnelling per point: " + ", ".join(stats))
        for col in ("L", sc["coupling"], "entry", f"tau_int({result['figure_of_merit']})", *stats):
            flips.add_column(col, justify="right")
        for r in result["rows"]:
            tau = r.get("tau_int")
            flips.add_row(str(r["L"]), f"{r['coupling']:g}", r["label"], f"{tau:.3g}" if tau is not None else "-",
                          *(f"{r[k]:g}" if isinstance(r.get(k), (int, float)) else "-" for k in stats))
        console.print(flips)
    console.print(f"wrote {out / 'results.json'} and {out / 'scale.png'}")


# -- scan -------------------------------------------------------------------------------------
@cli.command("scan")
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(exists=False))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="override a config value (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output directory (resumable)")
@force_option
def scan_cmd(config_path: str, overrides: tuple[str, ...], out: Path | None, force: bool) -> None:
    """Sample the action at every point of a coupling scan with every entry (docs/scan.md)."""
    from .registry import get_registry
    from .report import scan_table
    from .scan import resolve_scan, run_scan

    reg = get_registry()
    resolved = resolve_scan(load_config_with_overrides(config_path, overrides), reg)
    distributed.init(resolved["scan"]["device"])
    out = prepare_out(out, "scan", force)
    with EntryProgress() as bar:
        result = run_scan(resolved, out, progress=bar)
    for table in scan_table(result):
        console.print(table)
    console.print(f"wrote {out / 'results.json'} and {out / 'scan.png'}")


class EntryProgress(Progress):
    """One progress line per compare entry and phase (train / sample)."""

    def __init__(self):
        super().__init__(None)
        self._tasks: dict[tuple[str, str], int] = {}

    def __call__(self, label: str, phase: str, done: int, total: int | None, metrics=None) -> None:
        key = (label, phase)
        if key not in self._tasks:
            self._tasks[key] = self._bar.add_task(f"{label}: {phase}", total=total, info="")
        self._bar.update(self._tasks[key], completed=done, total=total)


def main() -> None:
    """Entry point of the ``lattgen`` script (plugins may add sub-commands)."""
    import warnings

    from .errors import LattgenWarning
    from .registry import get_registry

    warnings.simplefilter("default", LattgenWarning)
    quiet = distributed.secondary()  # a torchrun worker other than rank 0: errors only
    console.quiet = quiet

    def show(message, category, filename, lineno, file=None, line=None):  # one line, no source echo
        if not quiet:
            err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False,
                              soft_wrap=True)

    warnings.showwarning = show
    try:
        get_registry().add_commands(cli)
    except LattgenError as exc:
        print_error(str(exc))
        sys.exit(2)
    cli.main(prog_name="lattgen")
