"""Human (rich) and machine (``--json``) output for the CLIs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported on use: ~40 ms that `plant --help` should not pay
    from rich.console import Console
    from rich.table import Table


def stdout_console() -> Console:
    from rich.console import Console

    # soft_wrap: never re-wrap payloads (users copy them); no highlighting of reply bytes.
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def frame_text(frame: bytes) -> str:
    """A frame for display: UTF-8 when it is text, else ``0x…`` hex."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + frame.hex()
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        return "0x" + frame.hex()
    return text


def frames_json(frames: Sequence[bytes]) -> list[str]:
    return [frame_text(f) for f in frames]


def print_frames(frames: Sequence[bytes]) -> None:
    """One reply frame per line, printed verbatim (no markup interpretation)."""
    for frame in frames:
        sys.stdout.write(frame_text(frame) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    from rich.table import Table

    tab = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in columns:
        tab.add_column(col)
    for row in rows:
        tab.add_row(*(str(v) for v in row))
    return tab
