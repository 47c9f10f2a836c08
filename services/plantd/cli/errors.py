"""Exit codes and the one exception type the CLIs raise for expected failures.

Every failure a user can cause or fix (broker down, bad config, unknown service) becomes a
``CliError`` carrying what failed, what to do about it, and the exit code scripts can test.
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum
from typing import IO, Any

import click


class ExitCode(IntEnum):
    """Exit codes of ``plant`` and ``plantd`` (documented in ``--help``)."""

    OK = 0
    ERROR_REPLY = 1  # the request reached a service, which answered with an error
    USAGE = 2  # bad command line (click's own code)
    UNREACHABLE = 3  # timeout: broker down, service not registered, or no reply in time
    CONFIG = 4  # bad or missing configuration or keys
    UNAVAILABLE = 5  # the component is not installed or failed to import
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 error reply from a service, 2 usage error, "
    "3 timeout or broker/service unreachable, 4 configuration or key problem, "
    "5 component not available, 130 interrupted."
)


def _json_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    root = ctx.find_root()
    return bool(root.meta.get("plantd.json", False))


class CliError(click.ClickException):
    """An expected failure: printed as ``error: <message>`` plus a hint, never a traceback."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        code: ExitCode = ExitCode.ERROR_REPLY,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code
        self.exit_code = int(code)  # type: ignore[misc]  # click reads it per instance
        self.details = details or {}
        # Captured now: by the time click calls show() the context is gone.
        self.json_mode = _json_mode()

    def show(self, file: IO[Any] | None = None) -> None:
        out = file if file is not None else sys.stderr
        if self.json_mode:
            doc: dict[str, Any] = {"error": self.message, "exit_code": self.exit_code}
            if self.hint:
                doc["hint"] = self.hint
            doc.update(self.details)
            out.write(json.dumps(doc) + "\n")
            return
        # rich is imported only when an error is shown: it costs ~40 ms of start-up.
        from rich.console import Console
        from rich.markup import escape

        console = Console(file=out, highlight=False, soft_wrap=True)
        console.print(f"[bold red]error:[/] {escape(self.message)}")
        if self.hint:
            console.print(f"  [dim]hint:[/] {escape(self.hint)}")
