"""Hook implementations of the observables plugin."""
