"""Hook implementations of the CP^{N-1} plugin: action ``cpn``, its observables (``field="sphere"``),
samplers ``sphere_hmc`` and ``cpn_local``, and the flow model ``cpn_flow`` (docs/cpn.md)."""

from __future__ import annotations

import functools

from lattgen import Param, Theory, hookimpl

CPN_PARAMS = (
    Param("N", "int", 3, "components of z: the target space is CP^(N-1) (N = 2 is O(3))", min=2),
    Param("beta", "float", doc="coupling beta of S = -beta N sum |z_x^dagger z_{x+mu}|^2"),
    Param("form", "str", "quartic", "quartic: S = -beta N sum |z_x^+ z_{x+mu}|^2; link: the auxiliary "
          "U(1)-link form with the links integrated out, S = -sum log I_0(2 beta N |z_x^+ z_{x+mu}|)",
          choices=("quartic", "link")),
)

INIT = Param("init", "str", "random", "initial fields: random (Haar on every sphere) or cold (z = e_1)",
             choices=("random", "cold"))


def cpn_theory():
    from .observables import DEFAULT_OBSERVABLES

    return Theory(
        default_point={"lattice": [8, 8], "N": 3, "beta": 0.7},
        classical_samplers=("sphere_hmc", "cpn_local"),
        observables=DEFAULT_OBSERVABLES,
        headline=("topological_charge_squared", "cpn_chi_m", "cpn_energy"),
        figure_of_merit="topological_charge_squared",
        histogram="topological_charge",
        histogram_label="geometric topological charge Q",
        data_sampler="sphere_hmc",
        data_observable="cpn_energy",
    )


def make_cpn(lattice, **params):
    """CP^(N-1) sigma model S = -beta N sum_{x,mu} |z_x^dagger z_{x+mu}|^2 (form quartic) or its auxiliary-link form."""
    from .action import CPNAction, CPNLinkAction

    form = params.pop("form", "quartic")
    return (CPNLinkAction if form == "link" else CPNAction)(lattice, **params)


@hookimpl
def lattgen_register_actions(register):
    register("cpn", make_cpn, params=CPN_PARAMS, doc=make_cpn.__doc__.strip(), theory=cpn_theory())


def _observable(name, lattice):
    from .observables import OBSERVABLES

    return OBSERVABLES[name](lattice)


OBSERVABLE_DOCS = {
    "cpn_energy": "E = (1/(d V)) sum_{x,mu} |z_x^dagger z_{x+mu}|^2 (S = -beta N d V E)",
    "cpn_chi_m": "magnetic susceptibility chi_m = sum_x <tr P_x P_0 - 1/N>",
    "cpn_xi": "second-moment correlation length from G~(0), G~(2 pi/L)",
    "cpn_correlator": "projector correlator G(t) of zero-momentum time slices",
    "topological_charge": "geometric topological charge Q (integer) from projector triangles",
    "topological_charge_squared": "<Q^2> of the geometric charge",
    "topological_susceptibility": "topological susceptibility chi_t = <Q^2>/V",
    "cpn_chi_t_xi2": "chi_t xi_2^2",
    "o3_topological_charge": "Berg-Luscher charge of n = z^dagger sigma z (CP^1 only)",
}


@hookimpl
def lattgen_register_observables(register):
    for name, doc in OBSERVABLE_DOCS.items():
        register(name, functools.partial(_observable, name), doc=doc, field="sphere")


SPHERE_HMC_PARAMS = (
    Param("n_chains", "int", 64, "chains advanced together", min=1),
    Param("trajectory_length", "float", 1.0, "MD time per trajectory", min=0, min_exclusive=True),
    Param("step_size", "float", None, "MD step size (default: tuned to target_acceptance in "
          "thermalisation, then frozen)", min=0, min_exclusive=True, nullable=True),
    Param("target_acceptance", "float", 0.8, "acceptance the step-size tuner aims at",
          min=0, max=1, min_exclusive=True, max_exclusive=True),
    Param("trajectory_jitter", "float", 0.5, "MD steps of each trajectory uniform in n (1 +- jitter)",
          min=0, max=1, max_exclusive=True),
    INIT,
)

CPN_LOCAL_PARAMS = (
    Param("n_chains", "int", 64, "chains advanced together", min=1),
    Param("n_hits", "int", 1, "Metropolis proposals per site and half-sweep", min=1),
    Param("phase_heatbath", "bool", True, "exact phase heatbath in the eigenbasis of the local field"),
    Param("proposal_width", "float", None, "width w of z -> (z + w xi)/|z + w xi| (default: tuned "
          "to target_acceptance in thermalisation, then frozen)", min=0, min_exclusive=True, nullable=True),
    Param("target_acceptance", "float", 0.5, "acceptance the width tuner aims at",
          min=0, max=1, min_exclusive=True, max_exclusive=True),
    INIT,
)


def make_sphere_hmc(action, *, device, dtype, generator, model=None, **params):
    """HMC on products of spheres S^(2N-1) (geodesic integrator) for actions on unit vectors."""
    from .sphere_hmc import SphereHMC

    return SphereHMC(action, device=device, dtype=dtype, generator=generator, **params)


def make_cpn_local(action, *, device, dtype, generator, model=None, **params):
    """Checkerboard Metropolis (small rotations) + exact phase heatbath for CP^(N-1)."""
    from .local import CPNLocal

    return CPNLocal(action, device=device, dtype=dtype, generator=generator, **params)


@hookimpl
def lattgen_register_samplers(register):
    register("sphere_hmc", make_sphere_hmc, params=SPHERE_HMC_PARAMS, doc=make_sphere_hmc.__doc__.strip(),
             exact=True)
    register("cpn_local", make_cpn_local, params=CPN_LOCAL_PARAMS, doc=make_cpn_local.__doc__.strip(),
             exact=True)


FLOW_PARAMS = (
    Param("n_layers", "int", 8, "coupling layers (alternating checkerboard colours)", min=1),
    Param("hidden", "list[int]", [32, 32], "hidden channels of the conditioner networks", min=1),
    Param("kernel_size", "int", 3, "odd convolution kernel size", min=1),
    Param("bins", "int", 8, "spline bins K per simplex coordinate", min=2),
    Param("directions", "int", None, "leading eigen-directions of the neighbours' field whose weights are "
          "transformed, the rest kept as one block (default: all that can matter, min(N-1, 2d))", min=1,
          nullable=True),
    Param("stencils", "list[int]", [1, 3], "L1 distances (odd) of the other colour's sites whose projectors make "
          "the field M_x of a layer's eigenbasis, cycled every two layers: [1] the nearest neighbours, [1, 3] "
          "alternately the shell at distance 3", min=1),
    Param("projective", "bool", True, "every coupling ends with z -> G z/|G z|, G a product of rank-one "
          "updates from the neighbours' projectors with coefficients from the same network (moves the phases; "
          "projective.py)"),
    Param("path_gradient", "bool", False, "sample()'s log q carries the path gradient only (lower-variance "
          "reverse KL, one extra inverse pass per step)"),
)


def make_cpn_flow(action, **params):
    """U(N)- and gauge-equivariant flow: Haar prior, eigenbasis simplex spline couplings (docs/cpn.md)."""
    from .flow import CPNFlowModel

    return CPNFlowModel(action.lattice, action.field_space.n, **params)


DECIMATED_PARAMS = (
    Param("n_layers", "int", 8, "coupling layers on the odd sites, alternating the odd sublattice's two colours "
          "(even x_0 first)", min=1),
    *(p for p in FLOW_PARAMS if p.name in ("hidden", "kernel_size", "bins", "directions")),
    Param("stencils", "list[int]", [1, 3], "rings (odd r) of the other odd-sublattice colour whose projectors make a "
          "layer's field M_x, offsets (a, b) with a, b odd and max(|a|, |b|) = r, cycled every two layers: [1] the four "
          "diagonal neighbours, [1, 3] alternately the next ring", min=1),
    *(p for p in FLOW_PARAMS if p.name == "projective"),
)


def make_cpn_decimated(action, **params):
    """Flow for the odd sites' marginal, even sites from their exact Bingham conditional (quartic form, 2D)."""
    from .decimated import CPNDecimatedModel, check_decimatable

    check_decimatable(action)
    return CPNDecimatedModel(action.lattice, action.field_space.n, action.beta, **params)


@hookimpl
def lattgen_register_models(register):
    register("cpn_flow", make_cpn_flow, params=FLOW_PARAMS, doc=make_cpn_flow.__doc__.strip(), field="sphere")
    register("cpn_decimated", make_cpn_decimated, params=DECIMATED_PARAMS, doc=make_cpn_decimated.__doc__.strip(),
             field="sphere")
