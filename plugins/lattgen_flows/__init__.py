"""lattgen built-in plugin: flows."""
