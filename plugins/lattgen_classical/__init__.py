"""lattgen built-in plugin: classical."""
