"""Hook implementations of the imh plugin."""
