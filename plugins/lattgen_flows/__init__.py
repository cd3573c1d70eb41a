"""lattgen built-in plugin: normalizing-flow layers and models for lattice fields.

Layers (registered as kind "layer"): affine_coupling, z2_affine_coupling, spline_coupling,
z2_spline_coupling, pointwise_spline, free_field, rescale. Models (kind "model"): affine,
spline, equivariant, gaussian. See docs/flows.md.
"""

from .affine import AffineCoupling, Z2AffineCoupling
from .coupling import CheckerboardCoupling
from .flow_model import LatticeFlowModel
from .free_field import FreeFieldLayer, GlobalRescale
from .lattice_layer import LatticeBijection
from .networks import ConvNet, DenseNet, Z2Symmetrised
from .spline import PointwiseOddSpline, SplineCoupling, Z2SplineCoupling

__all__ = [
    "AffineCoupling",
    "CheckerboardCoupling",
    "ConvNet",
    "DenseNet",
    "FreeFieldLayer",
    "GlobalRescale",
    "LatticeBijection",
    "LatticeFlowModel",
    "PointwiseOddSpline",
    "SplineCoupling",
    "Z2AffineCoupling",
    "Z2SplineCoupling",
    "Z2Symmetrised",
]
