"""``python -m plantd.state``: the same as ``plantd state``."""

from plantd.state.main import cli

if __name__ == "__main__":
    cli(prog_name="plantd state")
