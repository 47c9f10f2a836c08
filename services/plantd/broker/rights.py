"""Where the broker's service and publish rights come from, and noticing when they change.

A registry file (``--registry``, default ``registry.json`` in the key directory) gives
:class:`~plantd.common.registry.Rights` in registry mode; without one, the "no registry" mode
reserves ``org.plantd.*`` for plantd's own component keys in the key directory. :meth:`poll`
compares a cheap signature (inode, size, mtime of the registry and of the own key files) and
rebuilds only when it changed, so the broker can check every ``registry_poll_ms``. A registry
that stops loading (half-written, bad JSON, made group-writable) keeps the last good rights and
logs an error: a typo must not open the bus, nor close it.

With ``identity_registry`` the file (or, without one, plantd's own keys with their usual
grants) is only the base: :meth:`set_enrolled` merges the identities enrolled in
org.plantd.Identity (:func:`~plantd.common.registry.merge_enrolled`; the file wins every
collision), and the rights are always in registry mode, so a module's rights do not depend on
whether identity has answered yet — only its enrolments do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from plantd.common.registry import (
    FILE_NAME,
    OWN_COMPONENTS,
    Registry,
    RegistryError,
    Rights,
    merge_enrolled,
    own_keys,
    plantd_registry,
)

log = logging.getLogger("plantd.broker.rights")

_Signature = tuple[tuple[str, int, int, int], ...]
_MAX_LOGGED: Final = 10_000  # ignored enrolments remembered so each is logged once


class RightsSource:
    """Loads :class:`Rights` for a key directory and an optional explicit registry path."""

    def __init__(
        self, keys_dir: Path, registry: str = "", *, identity_registry: bool = False
    ) -> None:
        self.keys_dir = keys_dir.expanduser()
        self.explicit = bool(registry)
        self.path = Path(registry).expanduser() if registry else self.keys_dir / FILE_NAME
        self.identity_registry = identity_registry
        self._signature: _Signature | None = None
        self.base: Rights | None = None  # what the files alone give
        self.enrolled: Registry | None = None  # identity's last good answer
        self.ignored: tuple[tuple[str, str], ...] = ()  # enrolments left out, and why
        self._logged: set[tuple[str, str]] = set()
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

    def _compose(self, base: Rights) -> Rights:
        """``base``, or with ``identity_registry`` the base registry plus the enrolments."""
        if not self.identity_registry:
            return base
        reg = base.registry
        if reg is None:  # no file: plantd's own keys, granted what `plantd up` would write
            own = plantd_registry(base.own).identities()
            reg = Registry(own, source=f"plantd's own keys in {self.keys_dir}")
        if self.enrolled is None:
            self.ignored = ()
            return Rights(reg)
        merged = merge_enrolled(reg, self.enrolled)
        self.ignored = merged.ignored
        for item in merged.ignored:
            if item in self._logged:
                continue
            if len(self._logged) >= _MAX_LOGGED:
                self._logged.clear()
            self._logged.add(item)
            log.warning(
                "an identity enrolled in org.plantd.Identity is ignored: the registry file "
                "wins; revoke it in identity (plant module revoke) or rename it",
                extra={"identity": item[0], "why": item[1], "registry": str(self.path)},
            )
        return Rights(merged.registry)

    def initial(self) -> Rights:
        self._signature = self.signature()
        self.base = self.load()
        self.rights = self._compose(self.base)
        return self.rights

    def set_enrolled(self, enrolled: Registry) -> Rights | None:
        """Merge identity's answer: new rights when it differs from the last one, else None."""
        last = self.enrolled
        if last is not None and last.to_dict() == enrolled.to_dict():
            return None
        self.enrolled = enrolled
        if self.base is None:
            return None  # before initial(): it composes with these
        self.rights = self._compose(self.base)
        return self.rights

    def poll(self, *, force: bool = False) -> Rights | None:
        """New rights when the files changed (or ``force``), else None. Never raises."""
        sig = self.signature()
        if not force and sig == self._signature:
            return None
        self._signature = sig
        try:
            base = self.load()
        except RegistryError as exc:
            self.failures += 1
            log.error(
                "registry reload failed; keeping the previous rights",
                extra={"error": str(exc), "registry": str(self.path)},
            )
            return None
        self.base = base
        self.rights = rights = self._compose(base)
        self.reloads += 1
        return rights

    def describe(self, rights: Rights) -> dict[str, object]:
        if rights.registry is not None:
            out: dict[str, object] = {
                "mode": rights.mode,
                "registry": str(self.path),
                "identities": len(rights.registry),
            }
            if self.identity_registry:
                out["enrolled"] = len(self.enrolled) if self.enrolled is not None else None
                out["enrolled_ignored"] = len(self.ignored)
            return out
        return {
            "mode": rights.mode,
            "registry": str(self.path),
            "own_keys": sorted(rights.own.values()),
        }
