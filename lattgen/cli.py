"""Command-line interface (placeholder, filled in by the CLI work)."""
def main():
    pass
