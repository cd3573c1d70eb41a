"""Hook implementations of the flows plugin."""
