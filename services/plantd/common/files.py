"""Files that guard the bus: directories only their owner can change, writes that follow no link.

Two rules for every file that holds a key, a password or a setting that can turn CURVE off:

- **The directory must not be writable by group or others.** Whoever can write a key directory
  can drop a ``NAME.key`` into the broker's allow-list or swap ``broker.key`` for their own.
  The one exception is a directory on a read-only mount (a Kubernetes Secret volume is mode
  1777 or 3777 but mounted ``readOnly``): there the mode bits grant nothing.
- **Writes never follow a symlink.** The data goes to a fresh temporary file created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (it cannot already exist, so it cannot be a planted link),
  gets its final mode before any byte is written, is fsynced, and is renamed over the target
  inside the same directory (``rename`` replaces a link at the target, never writes through it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

GROUP_OTHER_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH


class InsecureDirectoryError(ValueError):
    """A directory that guards secrets is writable by group or others; the message says the fix."""


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def insecure_reason(path: Path) -> str | None:
    """Why ``path`` (an existing directory) is unsafe to trust, or None if it is fine.

    Missing directories are fine here: whoever creates them creates them 0700.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None  # creating it will fail or succeed on its own, with its own message
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror}"
    if not stat.S_ISDIR(mode):
        return f"{path} is not a directory"
    if mode & GROUP_OTHER_WRITE and not _read_only_mount(path):
        who = (
            "group and other users"
            if mode & stat.S_IWGRP and mode & stat.S_IWOTH
            else ("its group" if mode & stat.S_IWGRP else "other users")
        )
        return f"{path} is writable by {who} (mode {stat.S_IMODE(mode):o})"
    return None


def check_private_dir(path: Path, what: str) -> None:
    """Raise :class:`InsecureDirectoryError` if ``path`` exists and group/other may write it."""
    reason = insecure_reason(path)
    if reason is not None:
        raise InsecureDirectoryError(
            f"refusing the {what} {path}: {reason}; anyone who can write there can add or "
            f"replace a key. Run `chmod go-w {path}` (or `chmod 700 {path}`)"
        )


def write_atomic(directory: Path, name: str, data: bytes, mode: int) -> Path:
    """Write ``directory/name`` with ``mode`` atomically, never through a symlink.

    ``name`` must be a plain file name. Raises OSError when the filesystem refuses.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad file name {name!r}: use a plain file name")
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)  # the umask may have narrowed it; never widened
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)
    return directory / name
