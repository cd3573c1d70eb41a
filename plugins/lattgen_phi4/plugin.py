"""Hook implementations of the phi4 plugin."""
