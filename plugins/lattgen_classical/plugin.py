"""Hook implementations of the classical plugin."""
