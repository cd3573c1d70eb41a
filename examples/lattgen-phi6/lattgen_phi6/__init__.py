"""Example third-party lattgen plugin: the phi^6 action."""
