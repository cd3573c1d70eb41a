"""lattgen built-in plugin: phi4."""
