"""lattgen built-in plugin: observables."""
