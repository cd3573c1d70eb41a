"""`lattgen scale`: critical slowing down along a line of constant physics.

At every (L, coupling) point the compare harness runs all entries; then, for each entry,
tau_int of the theory's figure of merit F is fitted as tau = c * x^z by weighted least squares in
log-log space (weights from the Gamma-method errors), where x is the theory's scaling observable
(e.g. a correlation length xi: z is the dynamic exponent) or, if it declares none, the coupling.
The line's default points come from the action's theory (``Theory.scaling``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .harness import resolve_compare, run_compare
from .params import Param, validate_params
from .registry import Registry, get_registry

SCALE_PARAMS: tuple[Param, ...] = (
    Param("points", "any", None, "list of [L, coupling] pairs along the line of constant physics "
          "(default: the action's theory's line)", nullable=True),
    Param("dimension", "int", 2, "space-time dimension d (lattice = [L] * d)", min=1),
    Param("coupling", "str", None, "action parameter set from each point's second number "
          "(default: the theory's)", nullable=True),
    Param("observable", "str", None, "observable whose tau_int is fitted (default: the theory's figure of "
          "merit; for example magnetisation in the broken phase)", nullable=True),
    Param("x", "str", "auto", "abscissa of the fit: auto (the theory's scaling observable, else the "
          "coupling), L (the lattice size: tau_int against L at fixed coupling), or coupling",
          choices=("auto", "L", "coupling")),
)


def resolve_scale(raw: Mapping[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    """Validate [scale] and build one resolved compare config per point."""
    reg = registry or get_registry()
    sec = raw.get("scale", {})
    if not isinstance(sec, Mapping):
        raise ConfigError("scale: must be a table ([scale])")
    scale = validate_params(SCALE_PARAMS, sec, "scale")
    base_action = dict(raw["action"]) if "action" in raw else {"name": reg.default_action()["name"]}
    if not isinstance(base_action.get("name"), str) or base_action["name"] not in reg.names("action"):
        raise ConfigError(f"action.name: unknown action {base_action.get('name')!r}; choose one of: "
                          + ", ".join(reg.names("action")))
    line = reg.theory(base_action["name"]).scaling
    if scale["points"] is None or scale["coupling"] is None:
        if line is None:
            raise ConfigError(f"scale.points: action {base_action['name']!r} declares no line of constant "
                              "physics; give [scale] points and coupling")
        base_action = {**dict(line.base), **base_action}
        scale["points"] = scale["points"] if scale["points"] is not None else [list(p) for p in line.points]
        scale["coupling"] = scale["coupling"] or line.coupling
    if scale["observable"] is not None and scale["observable"] not in reg.names("observable"):
        raise ConfigError(f"scale.observable: unknown observable {scale['observable']!r}; choose one of: "
                          + ", ".join(reg.names("observable")))
    scale["x_observable"] = line.x_observable if line is not None and scale["x"] == "auto" else None
    points = scale["points"]
    if not isinstance(points, Sequence) or len(points) < 2:
        raise ConfigError("scale.points: need a list of at least two [L, coupling] pairs")
    for i, p in enumerate(points):
        if (not isinstance(p, Sequence) or len(p) != 2 or not isinstance(p[0], int) or isinstance(p[0], bool)
                or not isinstance(p[1], (int, float)) or isinstance(p[1], bool)):
            raise ConfigError(f"scale.points[{i}]: {p!r} is not an [L, coupling] pair (integer L, number)")
    per_point = []
    for L, coupling in points:
        action = {**base_action, "lattice": [L] * scale["dimension"], scale["coupling"]: float(coupling)}
        cfg = {k: v for k, v in raw.items() if k != "scale"}
        cfg["action"] = action
        per_point.append(resolve_compare(cfg, reg))
    return {"scale": scale, "points": per_point}


def fit_power_law(x: Sequence[float], y: Sequence[float], dy: Sequence[float]) -> dict[str, float]:
    """Weighted least-squares fit y = c * x^z in log space; returns z, its error, c and chi^2/dof.

    sigma(log y) = dy / y. With more than two points the error is scaled by sqrt(chi^2/dof)
    when that exceeds one (the Birge ratio), so a poor fit is not reported as precise.
    """
    x, y, dy = (np.asarray(a, dtype=np.float64) for a in (x, y, dy))
    good = (x > 0) & (y > 0) & (dy > 0) & np.isfinite(x) & np.isfinite(y) & np.isfinite(dy)
    x, y, dy = x[good], y[good], dy[good]
    if x.size < 2:
        return {"z": math.nan, "z_error": math.nan, "c": math.nan, "chi2_dof": math.nan, "n_points": int(x.size)}
    lx, ly, w = np.log(x), np.log(y), (y / dy) ** 2
    A = np.stack([np.ones_like(lx), lx], axis=1)
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    coef = cov @ (A.T @ (w * ly))
    resid = ly - A @ coef
    dof = x.size - 2
    chi2_dof = float(np.sum(w * resid**2) / dof) if dof > 0 else math.nan
    scale = math.sqrt(max(1.0, chi2_dof)) if dof > 0 else 1.0
    return {"z": float(coef[1]), "z_error": float(math.sqrt(cov[1, 1]) * scale), "c": float(math.exp(coef[0])),
            "chi2_dof": chi2_dof, "n_points": int(x.size)}


def run_scale(resolved: Mapping[str, Any], out_dir: str | Path, registry: Registry | None = None,
              progress: Callable | None = None) -> dict[str, Any]:
    """Run the comparison at every point, then fit z per entry; write results.json and scale.png."""
    from .report import write_json

    out = Path(out_dir)
    rows: list[dict[str, Any]] = []
    for point in resolved["points"]:
        L = point["action"]["lattice"][0]
        coupling = point["action"][resolved["scale"]["coupling"]]
        sub = out / f"L{L}_{resolved['scale']['coupling']}{coupling:g}"
        summary = run_compare(point, sub, registry=registry, progress=progress)
        x_obs = resolved["scale"].get("x_observable")
        xi = _pooled(summary, x_obs) if x_obs else \
            (float(L), 0.0) if resolved["scale"].get("x") == "L" else (float(coupling), 0.0)
        fom = resolved["scale"].get("observable") or point["theory"]["figure_of_merit"]
        for e in summary["entries"]:
            p = e["performance"]
            o = e["observables"].get(fom, {})
            chain_stats = {f"{name}_{k[6:]}": v for name, ob in e["observables"].items() if isinstance(ob, dict)
                           for k, v in ob.items() if k.startswith("chain_")}
            rows.append({
                "L": L, "coupling": coupling, "xi": xi[0], "xi_error": xi[1], "label": e["label"],
                "tau_int": o.get("tau_int"), "tau_int_error": o.get("tau_int_error"),
                **{k: v for k, v in p.items() if k.startswith("tau_int_")}, **chain_stats,
                "acceptance": e.get("acceptance"), "train_time_s": p.get("train_time_s"),
                "ess_per_s": p.get("ess_per_s"), "time_to_target_s": p.get("time_to_target_s"),
                "consistent": e.get("consistency", {}).get("consistent", True),
            })
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fits = {}
    for label in labels:
        rs = [r for r in rows if r["label"] == label]
        fits[label] = fit_power_law([r["xi"] for r in rs], [r["tau_int"] or np.nan for r in rs],
                                    [r["tau_int_error"] or np.nan for r in rs])
    fom = resolved["scale"].get("observable") or (
        resolved["points"][0]["theory"]["figure_of_merit"] if resolved["points"] else None)
    result = {"scale": resolved["scale"], "figure_of_merit": fom, "rows": rows, "fits": fits}
    from . import distributed

    if distributed.is_main():  # torchrun: every point ran spread over the ranks; rank 0 writes
        from .metadata import METADATA, run_metadata

        device = resolved["points"][0]["compare"]["device"] if resolved["points"] else None
        write_json(run_metadata(device), out / METADATA)
        write_json(result, out / "results.json")
        plot_scale(result, out)
    return result


def _pooled(summary: Mapping[str, Any], name: str) -> tuple[float, float]:
    """An observable at a point (e.g. xi): the inverse-variance pooled value of all entries."""
    vals = [(e["observables"][name]["value"], e["observables"][name]["error"])
            for e in summary["entries"] if name in e["observables"]]
    vals = [(v, s) for v, s in vals if isinstance(v, (int, float)) and isinstance(s, (int, float)) and s > 0]
    if not vals:
        return math.nan, math.nan
    w = np.array([1 / s**2 for _, s in vals])
    return float(np.sum(w * np.array([v for v, _ in vals])) / w.sum()), float(1 / math.sqrt(w.sum()))


def plot_scale(result: Mapping[str, Any], out: Path) -> Path:
    """Log-log plot of tau_int(F) against x (xi, or the coupling) with fitted power laws, and
    acceptance against x (the shared style of lattgen.plots)."""
    from .plots import pyplot, save_figure, styled

    return styled(_plot_scale)(result, out, pyplot, save_figure)


def _plot_scale(result: Mapping[str, Any], out: Path, pyplot, save_figure) -> Path:

    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, fit in result["fits"].items():
        rs = [r for r in result["rows"] if r["label"] == label]
        xi = np.array([r["xi"] for r in rs], dtype=float)
        tau = np.array([r["tau_int"] if r["tau_int"] is not None else np.nan for r in rs], dtype=float)
        dtau = np.array([r["tau_int_error"] or 0 for r in rs], dtype=float)
        dxi = np.array([r["xi_error"] or 0 for r in rs], dtype=float)
        name = label if not math.isfinite(fit["z"]) else f"{label}: z = {fit['z']:.2f} +- {fit['z_error']:.2f}"
        line = ax.errorbar(xi, tau, xerr=dxi, yerr=dtau, fmt="o", capsize=3, label=name)
        if math.isfinite(fit["z"]):
            grid = np.linspace(np.nanmin(xi), np.nanmax(xi), 50)
            ax.plot(grid, fit["c"] * grid ** fit["z"], "-", color=line[0].get_color(), alpha=0.6)
        acc = [r["acceptance"] for r in rs]
        if any(r["train_time_s"] for r in rs):
            ax2.plot(xi, acc, "o-", color=line[0].get_color(), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    x_name = result["scale"].get("x_observable") or (
        "L" if result["scale"].get("x") == "L" else result["scale"]["coupling"])
    ax.set_xlabel(x_name)
    ax.set_ylabel(f"tau_int({result.get('figure_of_merit')}) [Markov steps]")
    ax.set_title(f"critical slowing down: tau_int ~ {x_name}^z")
    ax2.set_xlabel(x_name)
    ax2.set_ylabel("Metropolis acceptance of the model's proposals")
    ax2.set_ylim(0, 1.02)
    ax2.set_title(f"generative models: acceptance against {x_name} (same training budget)")
    if not ax2.get_legend_handles_labels()[0]:
        ax2.text(0.5, 0.5, "no model entries", ha="center", va="center", transform=ax2.transAxes)
    for a in (ax, ax2):
        a.grid(alpha=0.3, which="both")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    return save_figure(fig, out / "scale.png")
