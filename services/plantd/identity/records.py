"""Record <-> stored JSON document, shared by every store (SQLite rows, Redis strings).

A document holds every field but the id (which lives in its key or column) and the filled-in
``roles``/``organizations`` of a user (links, not fields), so both stores keep the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Final

from plantd.identity.model import Module, Organization, Role, User

USER_FIELDS: Final = frozenset({f.name for f in fields(User)} - {"id", "roles", "organizations"})
ROLE_FIELDS: Final = frozenset({f.name for f in fields(Role)} - {"id"})
ORG_FIELDS: Final = frozenset({f.name for f in fields(Organization)} - {"id"})
MODULE_FIELDS: Final = frozenset(f.name for f in fields(Module))


def user_from(user_id: int, doc: str) -> User:
    data = json.loads(doc)
    return User(id=int(user_id), **{k: v for k, v in data.items() if k in USER_FIELDS})


def role_from(role_id: int, doc: str) -> Role:
    data = json.loads(doc)
    return Role(id=int(role_id), **{k: v for k, v in data.items() if k in ROLE_FIELDS})


def org_from(org_id: int, doc: str) -> Organization:
    data = json.loads(doc)
    return Organization(id=int(org_id), **{k: v for k, v in data.items() if k in ORG_FIELDS})


def encode(obj: User | Role | Organization) -> str:
    d = obj.doc()
    for k in ("id", "roles", "organizations"):
        d.pop(k, None)
    return json.dumps(d)


def module_from(doc: str) -> Module:
    data: dict[str, Any] = json.loads(doc)
    kw = {k: v for k, v in data.items() if k in MODULE_FIELDS}
    kw["services"] = tuple(kw.get("services", ()))
    kw["permissions"] = tuple(kw.get("permissions", ()))
    kw["publish"] = {str(b): tuple(p) for b, p in dict(kw.get("publish", {})).items()}
    return Module(**kw)


def module_doc(m: Module) -> str:
    return json.dumps(m.doc(), sort_keys=True, separators=(",", ":"))
