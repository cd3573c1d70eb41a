"""CP^{N-1} sigma models (CP^1 = O(3)): action, observables, sphere samplers and flows (docs/cpn.md)."""
