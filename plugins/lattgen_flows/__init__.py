"""lattgen built-in plugin: normalizing-flow layers and models for lattice fields.

Layers (registered as kind "layer"): affine_coupling, z2_affine_coupling, spline_coupling,
z2_spline_coupling, pointwise_spline, free_field, prolong, rescale. Models (kind "model"):
affine, spline, equivariant, gaussian, multigrid. ``circular_rq_spline``: the circle
diffeomorphism that angle-valued theories' flows build on. See docs/flows.md.

The package is lazy (PEP 562): loading the plugin (``lattgen_flows.plugin``) imports no layer
code; the names below are imported on first access.
"""

from __future__ import annotations

import importlib

#: public name -> module that defines it
_EXPORTS = {
    "AffineCoupling": "affine",
    "Z2AffineCoupling": "affine",
    "CheckerboardCoupling": "coupling",
    "LatticeFlowModel": "flow_model",
    "FreeFieldLayer": "free_field",
    "circular_rq_spline": "circular",
    "GlobalRescale": "free_field",
    "LatticeBijection": "lattice_layer",
    "ConvNet": "networks",
    "DenseNet": "networks",
    "Z2Symmetrised": "networks",
    "PointwiseOddSpline": "spline",
    "SplineCoupling": "spline",
    "Z2SplineCoupling": "spline",
}

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
    "circular_rq_spline",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
