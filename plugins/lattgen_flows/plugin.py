"""Hook implementations of the flows plugin: flow layers and the models affine, spline, equivariant, gaussian, multigrid.

Every factory imports its implementation lazily: loading the plugin costs no import of torch.nn code.
"""

from __future__ import annotations

import functools

from lattgen import Param, hookimpl

ACTIVATION_CHOICES = ("tanh", "leaky_relu", "silu", "gelu")

# -- shared parameter declarations ---------------------------------------------------------------
PARITY = Param("parity", "int", 0, "checkerboard colour the layer updates (sum_mu x_mu mod 2)", choices=(0, 1))
KERNEL = Param("kernel_size", "int", 3, "odd convolution kernel size (conv networks)", min=1)
ACTIVATION = Param("activation", "str", "tanh", "hidden activation (tanh keeps extreme inputs finite)",
                   choices=ACTIVATION_CHOICES)
NETWORK = Param("network", "str", "conv", "conditioner: conv (fully convolutional, any L) or dense (one L)",
                choices=("conv", "dense"))
BINS = Param("bins", "int", 8, "number of spline bins K", min=2)
TAIL = Param("tail_bound", "float", 4.0, "spline interval [-B, B]; identity outside", min=0, min_exclusive=True)
SPECTRUM = Param("spectrum", "str", "kinetic",
                 "free-field spectrum: kinetic 1/(a p_hat^2 + b) (any L) or momentum (one log G~(p) per p)",
                 choices=("kinetic", "momentum"))
PATH_GRADIENT = Param("path_gradient", "bool", False,
                      "sample()'s log q carries the path gradient only (lower-variance reverse KL, "
                      "one extra inverse pass per step)")
LAYERS = Param("layers", "any", None,
               "layer stack replacing the generated one: list of tables {name = <layer>, repeat = n, <params>}",
               nullable=True)


def hidden(default):
    return Param("hidden", "list[int]", list(default), "hidden channels of the conditioner networks", min=1)


def n_layers(default):
    return Param("n_layers", "int", default, "number of coupling layers (alternating colours)", min=0)


def free_field(default):
    return Param("free_field", "bool", default,
                 "start with the free-field FFT layer (exact propagator, else a kinetic guess; learnable)")


SITES = Param("sites", "str", "all",
              "sites of the colour it updates: all, or fine (sites with an odd coordinate; the coarse "
              "sublattice of a multigrid level stays frozen)", choices=("all", "fine"))
COUPLING_PARAMS = (PARITY, hidden((16, 16)), KERNEL, ACTIVATION, NETWORK, SITES)
SPLINE_PARAMS = (*COUPLING_PARAMS, BINS, TAIL)


# -- layer factories -----------------------------------------------------------------------------
def make_affine_coupling(lattice, **params):
    """Checkerboard affine coupling y' = y e^s(x) + t(x) with a conv (or dense) conditioner."""
    from .affine import make_affine_coupling as make

    return make(lattice, **params)


def make_z2_affine_coupling(lattice, **params):
    """Z2-equivariant affine coupling: even s(x) = (n(x)+n(-x))/2, odd t(x) = (m(x)-m(-x))/2."""
    from .affine import make_affine_coupling as make

    return make(lattice, **params, z2=True)


def make_spline_coupling(lattice, **params):
    """Checkerboard rational-quadratic spline coupling, identity tails (arXiv 1906.04032)."""
    from .spline import make_spline_coupling as make

    return make(lattice, **params)


def make_z2_spline_coupling(lattice, **params):
    """Z2-equivariant spline coupling y' = e^s f(y) + t: odd spline f, even s, odd t."""
    from .spline import make_spline_coupling as make

    return make(lattice, **params, z2=True)


def make_pointwise_spline(lattice, **params):
    """One learnable odd RQ spline applied to every site (no conditioner; any L)."""
    from .spline import PointwiseOddSpline

    return PointwiseOddSpline(lattice, **params)


def make_free_field(lattice, spectrum, learnable, a, b, from_action):
    """Gaussian free-field layer phi = C^{1/2} z by FFT, log-det (1/2) sum_p log G~(p)."""
    from .free_field import FreeFieldLayer

    layer = FreeFieldLayer(lattice, spectrum, learnable, a=a, b=b)
    layer.from_action = from_action
    return layer


def make_prolong(lattice, **params):
    """Multigrid prolongation: fine sites from the Gaussian conditional given the coarse sites (kept)."""
    from .multigrid import GaussianProlong

    return GaussianProlong(lattice, **params)


def make_rescale(lattice, **params):
    """Global rescaling phi = e^c z with one learnable number c."""
    from .free_field import GlobalRescale

    return GlobalRescale(lattice, **params)


@hookimpl
def lattgen_register_layers(register):
    register("affine_coupling", make_affine_coupling, params=COUPLING_PARAMS)
    register("z2_affine_coupling", make_z2_affine_coupling, params=COUPLING_PARAMS)
    register("spline_coupling", make_spline_coupling, params=SPLINE_PARAMS)
    register("z2_spline_coupling", make_z2_spline_coupling, params=SPLINE_PARAMS)
    register("pointwise_spline", make_pointwise_spline, params=(BINS, TAIL))
    register("free_field", make_free_field, params=(
        SPECTRUM,
        Param("learnable", "bool", True, "train G~(p) (false: frozen)"),
        Param("a", "float", 1.0, "initial a of 1/G~(p) = a p_hat^2 + b", min=0, min_exclusive=True),
        Param("b", "float", 1.0, "initial b of 1/G~(p) = a p_hat^2 + b", min=0, min_exclusive=True),
        Param("from_action", "bool", True,
              "inside a model: start from the action's propagator (or kinetic guess) instead of a, b"),
    ))
    register("prolong", make_prolong, params=(
        Param("a", "float", 1.0, "initial a of the Gaussian 1/G~(p) = a p_hat^2 + b", min=0, min_exclusive=True),
        Param("b", "float", 1.0, "initial b of the Gaussian 1/G~(p) = a p_hat^2 + b", min=0, min_exclusive=True),
    ))
    register("rescale", make_rescale, params=(
        Param("scale", "float", 1.0, "initial factor e^c", min=0, min_exclusive=True),
        Param("learnable", "bool", True, "train the factor"),
    ))


# -- model factories -----------------------------------------------------------------------------
def make_affine_model(action, registry=None, **params):
    """Tutorial flow: checkerboard affine couplings with conv nets (arXiv 2101.08176)."""
    from .models import make_affine_model as make

    return make(action, registry=registry, **params)


def make_spline_model(action, registry=None, **params):
    """Checkerboard rational-quadratic spline couplings (arXiv 1906.04032)."""
    from .models import make_spline_model as make

    return make(action, registry=registry, **params)


def make_equivariant_model(action, registry=None, **params):
    """Z2-equivariant flow: learnable free-field layer + symmetrised couplings (the fast default)."""
    from .models import make_equivariant_model as make

    return make(action, registry=registry, **params)


def make_multigrid_model(action, **params):
    """Multigrid flow: coarse flow on the L/2 sublattice, Gaussian prolongation, refinement couplings (recursive)."""
    from .models import make_multigrid_model as make

    return make(action, **params)


def make_gaussian_model(action, **params):
    """Free-field layer (+ rescale) alone: exact (acceptance 1) on free fields."""
    from .models import make_gaussian_model as make

    return make(action, **params)


def make_conditional_equivariant(action, **params):
    """Equivariant flow conditioned on the action's couplings over a range (amortised over a scan)."""
    from .conditional_models import make_conditional_equivariant as make

    return make(action, **params)


def make_conditional_multigrid(action, **params):
    """Multigrid flow conditioned on the action's couplings over a range (amortised over a scan)."""
    from .conditional_models import make_conditional_multigrid as make

    return make(action, **params)


CONDITION_GAUSSIAN = Param("condition_gaussian", "bool", True,
                           "make every Gaussian (free-field / prolongation) layer's kinetic form a function "
                           "of the couplings (KineticModulation); false: one spectrum for the whole range "
                           "(a run directory trained before this option is read with false)", legacy=False)

ZERO_MODE = Param("zero_mode", "bool", True,
                  "an odd spline of the latent zero mode conditioned on the couplings (ZeroModeSpline; at "
                  "the coarsest level for multigrid): a bimodal magnetisation for the broken phase (a run "
                  "directory trained before this option is read with false)", legacy=False)

TILT = Param("couplings_tilt", "table", None,
             "tilt of the training draw, {name = t} with t in [-1, 1]: density 1 + t (2u - 1) over the "
             "range (u = 0 at lo, 1 at hi; t = 0.5 draws 3x more at hi than at lo); default uniform",
             nullable=True)

COUPLINGS = Param("couplings", "table", None,
                  "trained range of each coupling, {name = [lo, hi], ...} (default: every coupling of "
                  "the action, +-10% around its value)", nullable=True)


def _with_registry(factory, registry):
    """``factory`` with the registry it was registered in bound (its ``layers`` are built by it)."""
    return functools.update_wrapper(functools.partial(factory, registry=registry), factory)


MULTIGRID_PARAMS = (
    Param("levels", "int", 2, "number of levels: the coarsest lattice is L / 2^(levels-1) "
          "(extents must be divisible by 2^levels)", min=1),
    Param("coarse_layers", "int", 4, "couplings at the coarsest level (after its free-field layer)", min=0),
    Param("refine_layers", "int", 2, "couplings per finer level on its fine sites only "
          "(conditioned on the coarse field)", min=0),
    Param("smooth_layers", "int", 2, "couplings per finer level on all sites, after refinement", min=0),
    Param("coupling", "str", "spline", "Z2-equivariant coupling type: spline or affine",
          choices=("affine", "spline")),
    hidden((16, 16)), KERNEL, ACTIVATION, BINS, TAIL,
    Param("path_gradient", "bool", True, PATH_GRADIENT.doc),
)


@hookimpl
def lattgen_register_models(register):
    reg = register.registry
    register("affine", _with_registry(make_affine_model, reg), params=(
        n_layers(16), hidden((8, 8)), KERNEL, ACTIVATION, NETWORK, free_field(False), PATH_GRADIENT, LAYERS,
    ))
    register("spline", _with_registry(make_spline_model, reg), params=(
        n_layers(8), hidden((16, 16)), KERNEL, ACTIVATION, NETWORK, BINS, TAIL, free_field(False), PATH_GRADIENT, LAYERS,
    ))
    register("equivariant", _with_registry(make_equivariant_model, reg), params=(
        Param("coupling", "str", "spline",
              "coupling type: spline (odd spline between even-scale/odd-shift maps) or affine",
              choices=("affine", "spline")),
        n_layers(4), hidden((16, 16)), KERNEL, ACTIVATION, NETWORK, BINS, TAIL, free_field(True),
        Param("pointwise", "bool", False, "add a site-wise odd spline after the free-field layer"),
        Param("path_gradient", "bool", True, PATH_GRADIENT.doc),
        LAYERS,
    ))
    register("multigrid", make_multigrid_model, params=(
        *MULTIGRID_PARAMS,
        Param("zero_mode", "bool", False, "an odd spline of the coarsest level's latent zero mode first "
              "(ZeroModeSpline): a non-Gaussian, or bimodal, magnetisation near and past the transition"),
    ))
    register("conditional_equivariant", make_conditional_equivariant, params=(
        COUPLINGS,
        Param("coupling", "str", "spline", "coupling type: spline or affine", choices=("affine", "spline")),
        n_layers(4), hidden((16, 16)), KERNEL, ACTIVATION, NETWORK, BINS, TAIL, free_field(True),
        Param("pointwise", "bool", False, "add a site-wise odd spline after the free-field layer"),
        Param("path_gradient", "bool", True, PATH_GRADIENT.doc), CONDITION_GAUSSIAN, ZERO_MODE, TILT,
    ), compare=False)
    register("conditional_multigrid", make_conditional_multigrid, params=(
        COUPLINGS, *MULTIGRID_PARAMS, CONDITION_GAUSSIAN, ZERO_MODE, TILT,
    ), compare=False)
    register("gaussian", make_gaussian_model, params=(
        SPECTRUM,
        Param("learnable", "bool", True, "train the spectrum (and the rescale)"),
        Param("rescale", "bool", True, "append a global learnable rescale"),
    ))
