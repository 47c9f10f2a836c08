"""``python -m plantd.identity``: the same as ``plantd identity``."""

from plantd.identity.main import cli

if __name__ == "__main__":
    cli(prog_name="plantd identity")
