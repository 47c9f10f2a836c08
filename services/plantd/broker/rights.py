"""Where the broker's service and publish rights come from, and noticing when they change.

A registry file (``--registry``, default ``registry.json`` in the key directory) gives
:class:`~plantd.common.registry.Rights` in registry mode; without one, the "no registry" mode
reserves ``org.plantd.*`` for plantd's own component keys in the key directory. :meth:`poll`
compares a cheap signature (inode, size, mtime of the registry and of the own key files) and
rebuilds only when it changed, so the broker can check every ``registry_poll_ms``. A registry
that stops loading (half-written, bad JSON, made group-writable) keeps the last good rights and
logs an error: a typo must not open the bus, nor close it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from plantd.common.registry import (
    FILE_NAME,
    OWN_COMPONENTS,
    Registry,
    RegistryError,
    Rights,
    own_keys,
)

log = logging.getLogger("plantd.broker.rights")

_Signature = tuple[tuple[str, int, int, int], ...]


class RightsSource:
    """Loads :class:`Rights` for a key directory and an optional explicit registry path."""

    def __init__(self, keys_dir: Path, registry: str = "") -> None:
        self.keys_dir = keys_dir.expanduser()
        self.explicit = bool(registry)
        self.path = Path(registry).expanduser() if registry else self.keys_dir / FILE_NAME
        self._signature: _Signature | None = None
        self.rights: Rights | None = None
        self.reloads = 0
        self.failures = 0

    def _watched(self) -> list[Path]:
        return [self.path, *(self.keys_dir / f"{n}.key" for n in OWN_COMPONENTS)]

    def signature(self) -> _Signature:
        sig = []
        for p in self._watched():
            try:
                st = os.stat(p)
            except OSError:
                sig.append((str(p), 0, -1, 0))
                continue
            sig.append((str(p), st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def load(self) -> Rights:
        """Build the rights now (raises RegistryError; an explicit registry must exist)."""
        if self.path.exists():
            reg = Registry.load(self.path)
            return Rights(reg)
        if self.explicit:
            raise RegistryError(
                f"registry {self.path} does not exist; create it (plant module enroll, or "
                "`plantd up` writes one for its own keys) or drop --registry"
            )
        return Rights(None, own_keys(self.keys_dir))

    def initial(self) -> Rights:
        self._signature = self.signature()
        self.rights = self.load()
        return self.rights

    def poll(self, *, force: bool = False) -> Rights | None:
        """New rights when the files changed (or ``force``), else None. Never raises."""
        sig = self.signature()
        if not force and sig == self._signature:
            return None
        self._signature = sig
        try:
            rights = self.load()
        except RegistryError as exc:
            self.failures += 1
            log.error(
                "registry reload failed; keeping the previous rights",
                extra={"error": str(exc), "registry": str(self.path)},
            )
            return None
        self.rights = rights
        self.reloads += 1
        return rights

    def describe(self, rights: Rights) -> dict[str, object]:
        if rights.registry is not None:
            return {
                "mode": rights.mode,
                "registry": str(self.path),
                "identities": len(rights.registry),
            }
        return {
            "mode": rights.mode,
            "registry": str(self.path),
            "own_keys": sorted(rights.own.values()),
        }
