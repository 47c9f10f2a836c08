"""The first administrator from a Secret (spec.identity.bootstrapSecretRef): what the builders
render with and without it, the label check, and that what identity gets is what it accepts
(its settings parse the rendered env; its bootstrap reader takes the file mode kubelet gives)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plantd.common import contract
from plantd.identity.bootstrap import BootstrapError, read_bootstrap_file
from plantd.identity.settings import IdentitySettings
from plantd_operator import admission, naming
from plantd_operator.builders import config, render_children, workloads
from plantd_operator.context import ClusterContext
from plantd_operator.status import Observation, Problem, conditions, phase

pytestmark = pytest.mark.unit
Factory = Callable[..., ClusterContext]
REF = {"identity": {"bootstrapSecretRef": {"name": "first-admin"}}}
CHECKED = {workloads.BOOTSTRAP_DIGEST: "d1"}
ENV = contract.env_key(naming.IDENTITY, contract.KEY_BOOTSTRAP_FILE)


def deployment(children: list[dict[str, Any]], component: str) -> dict[str, Any]:
    name = f"demo-{component}"
    return next(c for c in children if c["kind"] == "Deployment" and c["metadata"]["name"] == name)


def config_data(children: list[dict[str, Any]]) -> dict[str, str]:
    return dict(next(c for c in children if c["kind"] == "ConfigMap")["data"])


def pod_of(children: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return dict(deployment(children, component)["spec"]["template"]["spec"])


def test_without_a_ref_nothing_is_rendered_and_the_setup_token_path_stays(
    ctx_factory: Factory,
) -> None:
    children = render_children(ctx_factory())
    assert ENV not in config_data(children)
    pod = pod_of(children, naming.IDENTITY)
    assert workloads.BOOTSTRAP_VOLUME not in {v["name"] for v in pod["volumes"]}
    # The setup token goes to the data volume, as before.
    assert config_data(children)[contract.env_key(naming.IDENTITY, contract.KEY_DATA_DIR)]


def test_a_checked_secret_is_mounted_read_only_into_identity_only(ctx_factory: Factory) -> None:
    children = render_children(ctx_factory(REF, secret_digests=CHECKED))
    data = config_data(children)
    assert data[ENV] == "/etc/plantd/bootstrap/bootstrap.json"
    pod = pod_of(children, naming.IDENTITY)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[workloads.BOOTSTRAP_VOLUME]["secret"] == {
        "secretName": "first-admin",
        "defaultMode": 0o400,
        "items": [{"key": "bootstrap.json", "path": "bootstrap.json"}],
        "optional": True,
    }
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if m["name"] == workloads.BOOTSTRAP_VOLUME
    ]
    assert mount == {
        "name": workloads.BOOTSTRAP_VOLUME,
        "mountPath": "/etc/plantd/bootstrap",
        "readOnly": True,
    }
    item = vols[workloads.BOOTSTRAP_VOLUME]["secret"]["items"][0]["path"]
    assert data[ENV] == f"{mount['mountPath']}/{item}", "the env names the mounted file"
    for other in (naming.BROKER, naming.STATE):
        assert "first-admin" not in json.dumps(pod_of(children, other))


def test_a_custom_key_is_projected_to_the_same_path(ctx_factory: Factory) -> None:
    spec = {"identity": {"bootstrapSecretRef": {"name": "sealed", "key": "admin.json"}}}
    pod = pod_of(render_children(ctx_factory(spec, secret_digests=CHECKED)), naming.IDENTITY)
    vol = next(v for v in pod["volumes"] if v["name"] == workloads.BOOTSTRAP_VOLUME)
    assert vol["secret"]["items"] == [{"key": "admin.json", "path": "bootstrap.json"}]


def test_an_unchecked_secret_is_never_mounted_but_identity_still_waits_for_it(
    ctx_factory: Factory,
) -> None:
    children = render_children(ctx_factory(REF))
    pod = pod_of(children, naming.IDENTITY)
    assert "first-admin" not in json.dumps(pod)
    # Without the env an empty store would get a setup-token admin, and the Secret, arriving
    # later, would be ignored for good; with it identity refuses to start until it is there.
    assert config_data(children)[ENV] == config.BOOTSTRAP_FILE


def test_the_secret_contents_do_not_roll_identity(ctx_factory: Factory) -> None:
    def identity_hash(digest: str) -> str:
        ctx = ctx_factory(REF, secret_digests={workloads.BOOTSTRAP_DIGEST: digest})
        meta = deployment(render_children(ctx), naming.IDENTITY)["spec"]["template"]["metadata"]
        return str(meta["annotations"][naming.ANNOTATION_CONFIG_HASH])

    assert identity_hash("a") == identity_hash("b")


def test_the_rendered_env_parses_in_identity_settings(ctx_factory: Factory) -> None:
    data = config_data(render_children(ctx_factory(REF, secret_digests=CHECKED)))
    prefix = contract.env_key(naming.IDENTITY, "")
    env = {k: v for k, v in data.items() if k.startswith(prefix)}
    assert IdentitySettings.unknown_env(env) == []
    settings = IdentitySettings.load(environ=env)
    assert settings.bootstrap_file == Path("/etc/plantd/bootstrap/bootstrap.json")


def kubelet_mode(default_mode: int, fs_group: bool) -> int:
    """The mode kubelet leaves on a Secret volume file: a read-only volume with an fsGroup
    gets the group read bit added (pkg/volume SetVolumeOwnership, roMask 0440)."""
    return default_mode | 0o440 if fs_group else default_mode


def test_identity_can_read_the_file_as_kubelet_mounts_it(
    ctx_factory: Factory, tmp_path: Path
) -> None:
    pod = pod_of(render_children(ctx_factory(REF, secret_digests=CHECKED)), naming.IDENTITY)
    sc = pod["securityContext"]
    # kubelet owns the file as root:fsGroup: the process reads it through its group, which
    # is the fsGroup because no container overrides runAsGroup.
    assert sc["fsGroup"] == sc["runAsGroup"] == sc["runAsUser"] == contract.IMAGE_UID
    assert "runAsGroup" not in pod["containers"][0]["securityContext"]
    vol = next(v for v in pod["volumes"] if v["name"] == workloads.BOOTSTRAP_VOLUME)
    path = tmp_path / "bootstrap.json"
    doc = {"username": "ops", "email": "ops@example.com", "password": "x" * 20}
    path.write_text(json.dumps(doc))
    path.chmod(kubelet_mode(vol["secret"]["defaultMode"], fs_group=True))
    assert stat.S_IMODE(path.stat().st_mode) == 0o440
    assert read_bootstrap_file(path)["username"] == "ops"
    # Why 0400 and not the 0444 other Secret files get: identity refuses world-readable.
    path.chmod(kubelet_mode(0o444, fs_group=True))
    with pytest.raises(BootstrapError, match="accessible by other users"):
        read_bootstrap_file(path)


def secret(labels: dict[str, str] | None, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "first-admin", "labels": labels or {}}, "data": data}


def check(found: dict[str, Any] | None, key: str = "bootstrap.json") -> Problem | None:
    return admission.secret_ref(
        "demo",
        "plant",
        found,
        name="first-admin",
        key=key,
        field_path="spec.identity.bootstrapSecretRef",
        prefix="Bootstrap",
        blocking=False,
    )


def test_admission_refuses_a_secret_not_labelled_for_the_cluster() -> None:
    data = {"bootstrap.json": "e30=", "aws-root-credentials": "eA=="}
    for found in (
        None,
        secret(None, data),
        secret({admission.SECRET_FOR_LABEL: "other-cluster"}, data),
    ):
        p = check(found)
        assert p is not None and p.reason == "BootstrapSecretNotFound" and not p.blocking
        assert "plantd.io/secret-for=demo" in p.message
        assert "aws-root-credentials" not in p.message
    # Missing and unlabelled read the same: nothing about the Secret leaks.
    assert check(None) == check(secret(None, data))


def test_admission_names_only_the_key_it_was_asked_for() -> None:
    found = secret({admission.SECRET_FOR_LABEL: "demo"}, {"aws-root-credentials": "eA=="})
    p = check(found)
    assert p is not None and p.reason == "BootstrapSecretKeyMissing"
    assert "'bootstrap.json'" in p.message and "aws-root-credentials" not in p.message
    assert check(secret({admission.SECRET_FOR_LABEL: "demo"}, {"bootstrap.json": "e30="})) is None


def test_an_unusable_bootstrap_secret_degrades_without_failing(ctx_factory: Factory) -> None:
    p = check(None)
    assert p is not None
    obs = Observation(generation=1, applied_generation=1, paused=False, problems=(p,))
    conds = {c["type"]: c for c in conditions(ctx_factory(REF), obs)}
    assert conds["Degraded"]["status"] == "True"
    assert conds["Degraded"]["reason"] == "BootstrapSecretNotFound"
    assert conds["StateStoreReady"]["reason"] != "BootstrapSecretNotFound"
    assert phase(list(conds.values()), obs) != "Failed"
