"""lattgen built-in plugin: imh."""
