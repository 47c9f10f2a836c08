"""``python -m plantd.gateway``: the same as ``plantd gateway``."""

from plantd.gateway.main import cli

if __name__ == "__main__":
    cli(prog_name="plantd gateway")
