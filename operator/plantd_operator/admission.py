"""Pure checks of a spec against the operator's policy, before anything is applied.

The operator acts with more rights than the user who writes a PlantdCluster (it may read
Secrets, it creates pods), so it must not become that user's deputy: images outside the
operator's allow-list and plaintext connections to an external Redis are refused here, with a
reason the status shows, and nothing of such a cluster is applied. Secret references need a
read: ``reconcile`` fetches them and :func:`secret_ref` judges what it found.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from plantd_operator.context import ClusterContext
from plantd_operator.status import Problem

# Label a Secret must carry before a PlantdCluster may use it (value: the cluster's name).
SECRET_FOR_LABEL = "plantd.io/secret-for"  # noqa: S105 - a label name
# Budget of the allow-list (an operator setting, but still a list we match every image against).
MAX_ALLOWED_IMAGES = 64
MAX_PATTERN_LENGTH = 512


def parse_allowed_images(raw: Sequence[str]) -> tuple[str, ...]:
    """Patterns from the operator's setting (comma or newline separated, empty = any image)."""
    out: list[str] = []
    for item in raw:
        out += [p.strip() for p in item.replace("\n", ",").split(",") if p.strip()]
    if len(out) > MAX_ALLOWED_IMAGES:
        raise ValueError(f"at most {MAX_ALLOWED_IMAGES} allowed-image patterns, got {len(out)}")
    for p in out:
        if len(p) > MAX_PATTERN_LENGTH:
            raise ValueError(f"allowed-image pattern longer than {MAX_PATTERN_LENGTH}: {p[:40]}...")
    return tuple(out)


def image_allowed(image: str, allowed: Sequence[str]) -> bool:
    """``allowed`` holds shell-style patterns (``*`` also matches ``/``); empty allows all."""
    return not allowed or any(fnmatch.fnmatchcase(image, p) for p in allowed)


def images(ctx: ClusterContext) -> list[tuple[str, str]]:
    """(spec field, image) of every container image the cluster would run."""
    field = "spec.image" if ctx.spec.image else "spec.version"
    out = [(field, ctx.image)]
    if ctx.spec.state.redis.mode == "managed":
        out.append(("spec.state.redis.managed.image", ctx.redis_image))
    return out


def check(ctx: ClusterContext, allowed_images: Sequence[str]) -> list[Problem]:
    """Problems of the spec itself; a blocking one means: apply nothing of this cluster."""
    problems: list[Problem] = []
    for field, image in images(ctx):
        if not image_allowed(image, allowed_images):
            problems.append(
                Problem(
                    "ImageNotAllowed",
                    f"{field} resolves to image {image!r}, which the operator's allowed-images "
                    "list does not match: use an image from an allowed registry, or ask the "
                    "operator's administrator to add it (chart value imageAllowList)",
                )
            )
    redis = ctx.spec.state.redis
    if redis.mode == "external" and redis.external is not None and not redis.external.tls.enabled:
        if redis.external.allow_plaintext:
            problems.append(
                Problem(
                    "PlaintextRedis",
                    f"the state and identity services talk to external Redis "
                    f"{redis.external.address} without TLS (allowPlaintext: true): its "
                    "password, every value and identity's refresh tokens cross the network "
                    "in the clear; set state.redis.external.tls.enabled: true",
                    blocking=False,
                )
            )
        else:
            problems.append(
                Problem(
                    "RedisTLSRequired",
                    f"external Redis {redis.external.address} without TLS is refused: set "
                    "state.redis.external.tls.enabled: true (or, on a network you trust, "
                    "state.redis.external.allowPlaintext: true)",
                )
            )
    if ctx.spec.identity.replicas > ctx.identity_replicas:
        problems.append(
            Problem(
                "IdentityReplicasCapped",
                f"identity.replicas is {ctx.spec.identity.replicas} but without Redis the "
                "identity service keeps its users in one SQLite file per pod: running "
                f"{ctx.identity_replicas}",
                blocking=False,
            )
        )
    return problems


def secret_ref(
    cluster: str,
    namespace: str,
    secret: Mapping[str, Any] | None,
    *,
    name: str,
    key: str,
    field_path: str,
    prefix: str,
    blocking: bool = True,
    hint: str = "",
) -> Problem | None:
    """None when ``secret`` (as read, None if absent) is labelled for ``cluster`` and holds
    ``key``; else the Problem (reasons ``<prefix>SecretNotFound`` / ``<prefix>SecretKeyMissing``).

    Missing and not labelled read the same, and no message names any other key of the
    Secret: a PlantdCluster must not learn which Secrets exist, or what is in them, beyond
    its own.
    """
    labels = ((secret or {}).get("metadata") or {}).get("labels") or {}
    if secret is None or labels.get(SECRET_FOR_LABEL) != cluster:
        return Problem(
            f"{prefix}SecretNotFound",
            f"no Secret {name!r} labelled {SECRET_FOR_LABEL}={cluster} (named in {field_path}) "
            f"in namespace {namespace}: create it with key {key!r} and label it (`kubectl label "
            f"secret {name} {SECRET_FOR_LABEL}={cluster}`){hint}",
            blocking=blocking,
        )
    if key not in (secret.get("data") or {}):
        return Problem(
            f"{prefix}SecretKeyMissing",
            f"Secret {name!r} named in {field_path} has no key {key!r}: add it, or set the key "
            f"the Secret uses{hint}",
            blocking=blocking,
        )
    return None
