"""Hook implementations of the u1 plugin: action ``u1``, its observables, sampler ``u1_heatbath``,
layers ``u1_plaquette_coupling`` and ``u1_plaquette_tree``, models ``u1_equivariant`` and ``u1_tree`` (all on link angles, ``field="circle"``)."""

from __future__ import annotations

from lattgen import Param, ScalingLine, Theory, hookimpl

U1_PARAMS = (Param("beta", "float", doc="gauge coupling beta of S = -beta sum_P cos theta_P (finite, > 0)",
                   min=0, min_exclusive=True),)

#: tau_int(Q^2) of HMC grows ~ exponentially along this line at L = 16 (the issue's table)
BETA_LINE = ((16, 2.0), (16, 3.0), (16, 4.0), (16, 5.0), (16, 6.0))

U1_THEORY = Theory(
    default_point={"lattice": [8, 8], "beta": 2.0},  # the point of the tutorial arXiv 2101.08176
    classical_samplers=("hmc", "u1_heatbath"),
    headline=("plaquette", "topological_charge_squared"),
    figure_of_merit="topological_charge_squared",
    histogram="topological_charge",
    histogram_label="topological charge Q = (1/2 pi) sum_P wrap(theta_P)",
    scaling=ScalingLine(points=BETA_LINE, coupling="beta",
                        source="topological freezing of HMC in 2D U(1) (docs/u1.md)"),
    data_sampler="u1_heatbath",
    data_observable="topological_charge_squared",
)


def make_u1(lattice, **params):
    """2D compact U(1): S = -beta sum_P cos theta_P on link angles, exact results on the torus."""
    from .action import U1Action

    return U1Action(lattice, **params)


@hookimpl
def lattgen_register_actions(register):
    register("u1", make_u1, params=U1_PARAMS, doc=make_u1.__doc__.strip(), theory=U1_THEORY)


@hookimpl
def lattgen_register_observables(register):
    """The gauge-invariant observables of ``observables.OBSERVABLES``, for link angles."""
    from .observables import OBSERVABLES

    for name, (factory, doc) in OBSERVABLES.items():
        register(name, factory, doc=doc, field="circle")


def make_heatbath(action, *, device, dtype, generator, model=None, **params):
    """U(1) heatbath (von Mises links) + overrelaxation, checkerboard-vectorised (model ignored)."""
    from .heatbath import U1Heatbath

    return U1Heatbath(action, device=device, dtype=dtype, generator=generator, **params)


LAYER_PARAMS = (
    Param("hidden", "list[int]", [16, 16], "hidden channels of the conditioner CNN", min=1),
    Param("kernel_size", "int", 3, "odd convolution kernel size", min=1),
    Param("activation", "str", "tanh", "hidden activation", choices=("tanh", "leaky_relu", "silu", "gelu")),
    Param("bins", "int", 8, "bins K of the circular splines", min=2),
    Param("rectangles", "bool", True, "also condition on frozen 2x1 rectangles (not only plaquettes)"),
)


def make_plaquette_coupling(lattice, **params):
    """Gauge-equivariant plaquette coupling (arXiv 2003.06413): circular splines of active plaquettes."""
    from .flow import PlaquetteCoupling

    return PlaquetteCoupling(lattice, **params)


def make_plaquette_tree(lattice, **params):
    """Exact 2D trivialising layer up to one plaquette: a dual spanning tree of von Mises maps."""
    from .plaquette_tree import PlaquetteTree

    return PlaquetteTree(lattice, **params)


KAPPA_DOC = ("von Mises concentration the non-root plaquettes are mapped to at the start (trained "
             "within [kappa/1.5, 1.5 kappa + 2])")
#: kappa's bounds (von_mises_map.KAPPA_MAX, not imported here: that module loads scipy)
KAPPA_BOUNDS = {"min": 0, "max": 200, "min_exclusive": True, "max_exclusive": True}
PATH_GRADIENT = Param("path_gradient", "bool", False, "log q's gradient through the sample only (arXiv 2207.08219)")


@hookimpl
def lattgen_register_layers(register):
    register("u1_plaquette_coupling", make_plaquette_coupling, params=(
        Param("mu", "int", 0, "direction of the updated links", choices=(0, 1)),
        Param("offset", "int", 0, "updated links at x_nu = offset (mod 4)", choices=(0, 1, 2, 3)),
        *LAYER_PARAMS,
    ), field="circle")
    register("u1_plaquette_tree", make_plaquette_tree, params=(
        Param("kappa", "float", 1.0, KAPPA_DOC, **KAPPA_BOUNDS),
    ), field="circle")


def make_u1_equivariant(action, **params):
    """Gauge-equivariant flow for U(1) links: plaquette couplings, circular splines, uniform prior."""
    from .flow import make_u1_equivariant as make

    return make(action, **params)


def make_u1_tree(action, **params):
    """2D U(1) flow exact up to one plaquette (dual-tree von Mises maps), optional couplings after it."""
    from .flow import make_u1_tree as make

    return make(action, **params)


@hookimpl
def lattgen_register_models(register):
    register("u1_equivariant", make_u1_equivariant, params=(
        Param("n_layers", "int", 24, "couplings, cycling through the 8 (mu, offset) masks (24: every "
              "link three times; the L = 8 benchmark's flow)", min=1),
        *LAYER_PARAMS,
        PATH_GRADIENT,
    ), field="circle")
    register("u1_tree", make_u1_tree, params=(
        Param("kappa", "float", None, KAPPA_DOC + "; default: the action's beta", nullable=True, **KAPPA_BOUNDS),
        Param("n_layers", "int", 0, "gauge-equivariant couplings after the tree layer (0: none)", min=0),
        *LAYER_PARAMS,
        PATH_GRADIENT,
    ), field="circle")


@hookimpl
def lattgen_register_samplers(register):
    register("u1_heatbath", make_heatbath, params=(
        Param("n_chains", "int", 64, "chains advanced together", min=1),
        Param("n_overrelax", "int", 1, "overrelaxation sweeps after each heatbath sweep", min=0),
        Param("init", "str", "random", "initial links: random (Haar) or cold (all zero)",
              choices=("random", "cold")),
    ), doc=make_heatbath.__doc__.strip(), exact=True)
