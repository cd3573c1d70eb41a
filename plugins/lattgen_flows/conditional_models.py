"""Conditional (amortised) flows ``conditional_equivariant`` and ``conditional_multigrid``.

The equivariant and multigrid stacks with every coupling network conditioned on the action's
couplings (extra constant input channels, normalised over the trained range), a leading
``CouplingScale`` and, with ``condition_gaussian`` (default), every Gaussian layer's kinetic form
1/G~(p; c) = a e^{da(c)} p_hat^2 + b e^{db(c)} a function of the couplings too
(``KineticModulation``, zero at start: the unconditional spectrum at every c), and with
``zero_mode`` (default) an odd spline of the latent zero mode conditioned on c (``ZeroModeSpline``: a
bimodal magnetisation for the broken phase); trained once by reverse KL over the range (couplings drawn per
configuration, ``lattgen.ConditionalModel``), then used by imh at any point. At a fixed point
the model is an ordinary Z2-equivariant flow (``model.flow`` reads the point).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lattgen import Action, Composition, ConditionalModel, coupling_ranges

from .conditioning import CouplingContext, CouplingScale, modulate_gaussian_layers
from .flow_model import LatticeFlowModel
from .models import _head, gaussian_kinetic, z2_coupling_factory
from .multigrid import build_multigrid, check_levels
from .spline import PointwiseOddSpline
from .zero_mode import ZeroModeSpline


class ConditionalFlowModel(ConditionalModel, LatticeFlowModel):
    """A lattice flow whose layers read the couplings from a shared ``CouplingContext``."""

    def __init__(self, action: Action, ranges: Mapping[str, tuple[float, float]], context: CouplingContext,
                 layers: list, path_gradient: bool):
        LatticeFlowModel.__init__(self, action.lattice, Composition(layers), path_gradient)
        self.init_couplings(action, ranges)
        self.context = context
        self._sync_point()

    def _sync_point(self) -> None:
        self.context.set_point(self.normalised(self.point_tensors(1), self.dtype))

    def condition(self, point):
        super().condition(point)
        self._sync_point()
        return self

    def sample_at(self, couplings, generator=None):
        with self.context.using(self.normalised(couplings, self.dtype)):
            return LatticeFlowModel.sample(self, next(iter(couplings.values())).shape[0], generator)

    def log_prob_at(self, phi, couplings):
        with self.context.using(self.normalised(couplings, self.dtype)):
            return LatticeFlowModel.log_prob(self, phi)


def make_conditional_equivariant(
    action: Action, couplings, coupling: str, n_layers: int, hidden: Sequence[int], kernel_size: int,
    activation: str, network: str, bins: int, tail_bound: float, free_field: bool, pointwise: bool,
    path_gradient: bool = True, condition_gaussian: bool = True, zero_mode: bool = True, couplings_tilt=None,
) -> ConditionalFlowModel:
    """The equivariant flow conditioned on the couplings of ``couplings`` ({name = [lo, hi]})."""
    ranges = coupling_ranges(action, couplings)
    ctx = CouplingContext(list(ranges))
    lat = action.lattice
    stack = [ZeroModeSpline(lat, ctx, bins, tail_bound)] if zero_mode else []
    stack += [CouplingScale(lat, ctx), *_head(action, free_field)]
    if pointwise:
        stack.append(PointwiseOddSpline(lat, bins, tail_bound))
    make = z2_coupling_factory(coupling, hidden, kernel_size, activation, network, bins, tail_bound, ctx)
    stack += [make(lat, i % 2, "all") for i in range(n_layers)]
    if condition_gaussian:
        modulate_gaussian_layers(Composition(stack), ctx)
    model = ConditionalFlowModel(action, ranges, ctx, stack, path_gradient)
    model.set_draw_tilt(couplings_tilt)
    return model


def make_conditional_multigrid(
    action: Action, couplings, levels: int, coarse_layers: int, refine_layers: int, smooth_layers: int,
    coupling: str, hidden: Sequence[int], kernel_size: int, activation: str, bins: int,
    tail_bound: float, path_gradient: bool = True, condition_gaussian: bool = True, zero_mode: bool = True,
    couplings_tilt=None,
) -> ConditionalFlowModel:
    """The multigrid flow conditioned on the couplings of ``couplings`` ({name = [lo, hi]})."""
    ranges = coupling_ranges(action, couplings)
    ctx = CouplingContext(list(ranges))
    lat = action.lattice
    check_levels(lat, levels)
    make = z2_coupling_factory(coupling, hidden, kernel_size, activation, "conv", bins, tail_bound, ctx)

    def head(coarse):
        return [ZeroModeSpline(coarse, ctx, bins, tail_bound)] if zero_mode else []

    stack = [CouplingScale(lat, ctx), *build_multigrid(lat, gaussian_kinetic(action), levels, make,
                                                       coarse_layers, refine_layers, smooth_layers,
                                                       coarse_head=head)]
    if condition_gaussian:
        modulate_gaussian_layers(Composition(stack), ctx)
    model = ConditionalFlowModel(action, ranges, ctx, stack, path_gradient)
    model.set_draw_tilt(couplings_tilt)
    return model
