"""The flow models ``affine``, ``spline``, ``equivariant`` and ``gaussian``: stacks of lattice layers.

Each factory takes the action (for its lattice, and its free-field propagator) and returns a
``LatticeFlowModel``. A model is a list of layers z -> phi: optionally the free-field layer
first (the Gaussian part of the theory, exact at lam = 0), then checkerboard couplings of
alternating colour. ``layers`` (a list of tables naming registered layers) replaces the
generated stack entirely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lattgen import Action, Bijection, Composition, ConfigError, Lattice

from .affine import make_affine_coupling
from .flow_model import LatticeFlowModel
from .free_field import FreeFieldLayer, GlobalRescale, fit_kinetic
from .free_field_init import exact_propagator, kinetic_guess
from .multigrid import build_multigrid, check_levels
from .spline import PointwiseOddSpline, make_spline_coupling
from .zero_mode import ZeroModeSpline


def start_free_field(layer: FreeFieldLayer, action: Action) -> FreeFieldLayer:
    """Initialise ``layer`` from the action: exact propagator if known, else the kinetic guess."""
    prop = exact_propagator(action)
    if prop is not None:
        layer.init_from_propagator(prop)
    elif layer.spectrum == "kinetic":
        layer.set_kinetic(*kinetic_guess(action))
    return layer


def gaussian_kinetic(action: Action) -> tuple[float, float]:
    """(a, b) of the action's Gaussian part 1/G~ = a p_hat^2 + b: fitted to the exact propagator
    if known and of that form, else ``kinetic_guess``."""
    prop = exact_propagator(action)
    if prop is not None:
        a, b, _ = fit_kinetic(1.0 / prop, action.lattice)
        if a > 0 and b > 0:
            return a, b
    return kinetic_guess(action)


def free_field_layer(action: Action, spectrum: str = "kinetic", learnable: bool = True) -> FreeFieldLayer:
    """A free-field layer for ``action``'s lattice, started from the action (``start_free_field``)."""
    return start_free_field(FreeFieldLayer(action.lattice, spectrum, learnable), action)


def alternating(n_layers: int, make: Callable[[int], Bijection]) -> list[Bijection]:
    """``n_layers`` couplings of alternating checkerboard colour 0, 1, 0, ..."""
    return [make(i % 2) for i in range(n_layers)]


def build_layer_stack(action: Action, layers: Sequence[Mapping[str, Any]], registry) -> list[Bijection]:
    """Layers from a list of tables ``{name = "<registered layer>", repeat = n, <its params>}``,
    each built by the given ``registry`` (the one the model was registered in).

    ``repeat`` (default 1) builds the table n times, alternating ``parity`` when the layer has
    one. Free-field layers with ``from_action = true`` start from the action.
    """
    if isinstance(layers, (str, bytes, Mapping)) or not isinstance(layers, Sequence) or not layers:
        raise ConfigError("model.layers: expected a non-empty list of tables, e.g. [{name = \"free_field\"}]")
    if registry is None:
        raise ConfigError("model.layers: building layers by name needs the registry the model was registered in")
    reg = registry
    out: list[Bijection] = []
    for i, table in enumerate(layers):
        where = f"model.layers[{i}]"
        if not isinstance(table, Mapping) or "name" not in table:
            raise ConfigError(f"{where}: expected a table with a 'name' naming a layer; available: "
                              + ", ".join(reg.names("layer")))
        params = {k: v for k, v in table.items() if k not in ("name", "repeat")}
        repeat = table.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ConfigError(f"{where}.repeat: expected an integer >= 1, got {repeat!r}")
        spec = reg.get("layer", table["name"])
        has_parity = any(p.name == "parity" for p in spec.params)
        first = params.get("parity", 0)
        for j in range(repeat):
            if has_parity:
                params["parity"] = (first + j) % 2 if isinstance(first, int) else first
            layer = spec.build(action.lattice, params=params, where=where)
            if isinstance(layer, FreeFieldLayer) and getattr(layer, "from_action", False):
                start_free_field(layer, action)
            out.append(layer)
    return out


def assemble(
    action: Action, generated: list[Bijection], layers, z2: bool = False, path_gradient: bool = False,
    registry=None,
) -> LatticeFlowModel:
    """The model from the generated stack, or from ``layers`` (built by ``registry``) when given;
    z2 checks equivariance."""
    stack = build_layer_stack(action, layers, registry) if layers is not None else generated
    if z2:
        broken = [type(l).__name__ for l in stack if not l.z2_equivariant]
        if broken:
            raise ConfigError(
                "model.layers: the equivariant model needs Z2-equivariant layers; not equivariant: "
                + ", ".join(broken)
            )
    return LatticeFlowModel(action.lattice, Composition(stack), path_gradient)


def _head(action: Action, free_field: bool, spectrum: str = "kinetic") -> list[Bijection]:
    return [free_field_layer(action, spectrum)] if free_field else []


def make_affine_model(
    action: Action, n_layers: int, hidden: Sequence[int], kernel_size: int, activation: str,
    network: str, free_field: bool, path_gradient: bool = False, layers=None,
    registry=None,
) -> LatticeFlowModel:
    """Checkerboard affine couplings (the tutorial flow, arXiv 2101.08176), optionally after a free-field layer."""
    lat = action.lattice
    stack = _head(action, free_field) if layers is None else []
    if layers is None:
        stack += alternating(n_layers, lambda p: make_affine_coupling(
            lat, p, hidden, kernel_size, activation, network))
    return assemble(action, stack, layers, path_gradient=path_gradient, registry=registry)


def make_spline_model(
    action: Action, n_layers: int, hidden: Sequence[int], kernel_size: int, activation: str,
    network: str, bins: int, tail_bound: float, free_field: bool, path_gradient: bool = False, layers=None,
    registry=None,
) -> LatticeFlowModel:
    """Checkerboard rational-quadratic spline couplings (arXiv 1906.04032), optionally after a free-field layer."""
    lat = action.lattice
    stack = _head(action, free_field) if layers is None else []
    if layers is None:
        stack += alternating(n_layers, lambda p: make_spline_coupling(
            lat, p, hidden, kernel_size, activation, network, bins, tail_bound))
    return assemble(action, stack, layers, path_gradient=path_gradient, registry=registry)


def z2_coupling_factory(
    coupling: str, hidden: Sequence[int], kernel_size: int, activation: str, network: str, bins: int,
    tail_bound: float, context=None,
) -> Callable[[Lattice, int, str], Bijection]:
    """``make(lattice, parity, sites)``: a Z2-equivariant affine or odd-spline coupling with these
    settings (conditioned on the couplings of ``context``, a ``CouplingContext``, when given)."""
    if coupling == "affine":
        return lambda lattice, parity, sites: make_affine_coupling(
            lattice, parity, hidden, kernel_size, activation, network, z2=True, sites=sites, context=context)
    if coupling == "spline":
        return lambda lattice, parity, sites: make_spline_coupling(
            lattice, parity, hidden, kernel_size, activation, network, bins, tail_bound, z2=True, sites=sites,
            context=context)
    raise ConfigError(f"model.coupling: {coupling!r} is unknown; choose affine or spline")


def make_equivariant_model(
    action: Action, coupling: str, n_layers: int, hidden: Sequence[int], kernel_size: int,
    activation: str, network: str, bins: int, tail_bound: float, free_field: bool,
    pointwise: bool, path_gradient: bool = False, layers=None,
    registry=None,
) -> LatticeFlowModel:
    """Z2-equivariant flow: free-field layer, then symmetrised affine or odd-spline couplings."""
    lat = action.lattice
    stack: list[Bijection] = []
    if layers is None:
        stack += _head(action, free_field)
        if pointwise:
            stack.append(PointwiseOddSpline(lat, bins, tail_bound))
        make = z2_coupling_factory(coupling, hidden, kernel_size, activation, network, bins, tail_bound)
        stack += alternating(n_layers, lambda p: make(lat, p, "all"))
    return assemble(action, stack, layers, z2=True, path_gradient=path_gradient, registry=registry)


def make_gaussian_model(action: Action, spectrum: str, learnable: bool, rescale: bool) -> LatticeFlowModel:
    """The free-field layer alone (+ a global rescale): exact, acceptance 1, on free fields."""
    stack: list[Bijection] = [free_field_layer(action, spectrum, learnable)]
    if rescale:
        stack.append(GlobalRescale(action.lattice, 1.0, learnable))
    return LatticeFlowModel(action.lattice, Composition(stack))


def make_multigrid_model(
    action: Action, levels: int, coarse_layers: int, refine_layers: int, smooth_layers: int,
    coupling: str, hidden: Sequence[int], kernel_size: int, activation: str, bins: int,
    tail_bound: float, path_gradient: bool = True, zero_mode: bool = False,
) -> LatticeFlowModel:
    """Multigrid flow (``multigrid.py``): coarse flow on the L/2^k sublattices, Gaussian prolongation, refinement;
    ``zero_mode``: an odd spline of the coarsest latent field's zero mode first (``ZeroModeSpline``)."""
    lat = action.lattice
    check_levels(lat, levels)
    make_coupling = z2_coupling_factory(coupling, hidden, kernel_size, activation, "conv", bins, tail_bound)

    def head(coarse):
        return [ZeroModeSpline(coarse, None, bins, tail_bound)] if zero_mode else []

    stack = build_multigrid(lat, gaussian_kinetic(action), levels, make_coupling, coarse_layers,
                            refine_layers, smooth_layers, coarse_head=head)
    return LatticeFlowModel(lat, Composition(stack), path_gradient)
