"""``python -m plantd.echo``: the same as ``plantd echo``."""

from plantd.echo.main import cli

if __name__ == "__main__":
    cli(prog_name="plantd echo")
