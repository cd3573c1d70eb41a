"""lattgen built-in plugin: 2D compact U(1) lattice gauge theory (docs/u1.md).

Action ``u1`` (Wilson, on ``LinkAngles``) with exact results on the torus (``exact``), its
gauge-invariant observables, the ``u1_heatbath`` sampler (heatbath + overrelaxation) and the
gauge-equivariant flow ``u1_equivariant`` (Kanwar et al., arXiv 2003.06413).
"""

from .action import U1Action, plaquette_angles
from .exact import exact_results

__all__ = ["U1Action", "exact_results", "plaquette_angles"]
