"""lattgen built-in plugin: phi^4 actions (form B ``phi4``, form A ``phi4_standard``) and their conversions."""

from .action import Phi4Action, Phi4Base, Phi4StandardAction
from .forms import FormA, FormB, action_offset, field_scale_b_to_a, form_a_to_b, form_b_to_a
from .free import check_free_field_stable, free_field_exact, kernel_eigenvalues, power_spectrum_at

__all__ = [
    "FormA",
    "FormB",
    "Phi4Action",
    "Phi4Base",
    "Phi4StandardAction",
    "action_offset",
    "check_free_field_stable",
    "field_scale_b_to_a",
    "form_a_to_b",
    "form_b_to_a",
    "free_field_exact",
    "kernel_eigenvalues",
    "power_spectrum_at",
]
