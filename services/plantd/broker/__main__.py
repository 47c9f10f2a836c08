"""``python -m plantd.broker``: the same as ``plantd broker``."""

from plantd.broker.main import cli

if __name__ == "__main__":
    cli(prog_name="plantd broker")
