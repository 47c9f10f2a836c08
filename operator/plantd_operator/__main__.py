"""``python -m plantd_operator``."""

from plantd_operator.main import cli

if __name__ == "__main__":
    cli(prog_name="python -m plantd_operator")
