"""Volume files get the modes and owners the pod spec says (`local/volumes.py`): defaultMode and
an item's mode, fsGroup's group read, a projected token private to the pod's one user; and the
local control plane's key files are root's, readable by its fsGroup 1337 alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from sidemesh.api import names
from sidemesh.local.controlplane import ControlPlaneOptions, control_plane_objects
from sidemesh.local.env import PodFacts
from sidemesh.local.volumes import (
    VolumeError,
    VolumeOwner,
    VolumeSources,
    materialize,
    volume_owner,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")

FACTS = PodFacts(
    name="p", namespace="ns", uid="u", pod_ip="10.244.0.5", host_ip="10.244.0.1",
    node_name="n", service_account="sa", labels={}, annotations={},
    node_cpus=1, node_memory_bytes=1,
)  # fmt: skip
SECRET = {"tls.key": "KEY", "tls.crt": "CERT"}


def sources(data: dict[str, str]) -> VolumeSources:
    return VolumeSources(
        config_maps=lambda name: data, secrets=lambda name: data, token=lambda ns, sa: "TOKEN"
    )


def files(directory: Path) -> dict[str, tuple[str, int, int]]:
    """path -> (octal mode, uid, gid) of every file below `directory`."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = path.stat()
            found[str(path.relative_to(directory))] = (
                oct(info.st_mode & 0o7777), info.st_uid, info.st_gid
            )  # fmt: skip
    return found


# (volume, owner) -> files
TABLE: list[tuple[str, dict[str, Any], VolumeOwner, dict[str, tuple[str, int, int]]]] = [
    ("secret, no mode: 0644", {"secret": {"secretName": "s"}}, VolumeOwner(),
     {"tls.crt": ("0o644", 0, 0), "tls.key": ("0o644", 0, 0)}),
    ("secret defaultMode 0400", {"secret": {"secretName": "s", "defaultMode": 0o400}},
     VolumeOwner(), {"tls.crt": ("0o400", 0, 0), "tls.key": ("0o400", 0, 0)}),
    ("defaultMode 0 is a mode", {"secret": {"secretName": "s", "defaultMode": 0}},
     VolumeOwner(), {"tls.crt": ("0o0", 0, 0), "tls.key": ("0o0", 0, 0)}),
    ("item mode over defaultMode",
     {"secret": {"secretName": "s", "defaultMode": 0o644,
                 "items": [{"key": "tls.key", "path": "k", "mode": 0o600}]}},
     VolumeOwner(), {"k": ("0o600", 0, 0)}),
    ("fsGroup adds group read", {"secret": {"secretName": "s", "defaultMode": 0o400}},
     VolumeOwner(fs_group=1337), {"tls.crt": ("0o440", 0, 1337), "tls.key": ("0o440", 0, 1337)}),
    ("token: defaultMode when users differ",
     {"projected": {"sources": [{"serviceAccountToken": {"path": "istio-token"}}]}},
     VolumeOwner(), {"istio-token": ("0o644", 0, 0)}),
    ("token: the pod's one user's, 0600",
     {"projected": {"sources": [{"serviceAccountToken": {"path": "istio-token"}}]}},
     VolumeOwner(fs_user=1337), {"istio-token": ("0o600", 1337, 0)}),
    ("token: 0600 + fsGroup read",
     {"projected": {"sources": [{"serviceAccountToken": {"path": "istio-token"}}]}},
     VolumeOwner(fs_group=2000), {"istio-token": ("0o640", 0, 2000)}),
]  # fmt: skip


@needs_root
@pytest.mark.parametrize(
    ("volume", "owner", "expected"), [c[1:] for c in TABLE], ids=[c[0] for c in TABLE]
)
def test_modes_and_owners(
    tmp_path: Path, volume: dict[str, Any], owner: VolumeOwner, expected: dict[str, Any]
) -> None:
    paths = materialize([{"name": "v", **volume}], tmp_path, FACTS, sources(SECRET), owner)
    assert files(paths["v"]) == expected


@needs_root
def test_an_empty_dir_is_writable_by_the_fs_group(tmp_path: Path) -> None:
    paths = materialize([{"name": "v", "emptyDir": {}}], tmp_path, FACTS, sources({}))
    assert oct(paths["v"].stat().st_mode & 0o7777) == "0o777"
    paths = materialize(
        [{"name": "w", "emptyDir": {}}], tmp_path, FACTS, sources({}), VolumeOwner(fs_group=7)
    )
    info = paths["w"].stat()
    assert (oct(info.st_mode & 0o7777), info.st_gid) == ("0o2777", 7)


@pytest.mark.parametrize("mode", [0o4755, 0o1000, -1, "0644", True, 1.5])
def test_a_mode_outside_0_to_0777_is_refused(tmp_path: Path, mode: object) -> None:
    volume = {"name": "v", "secret": {"secretName": "s", "defaultMode": mode}}
    with pytest.raises(VolumeError, match="must be a number between 0 and 0777"):
        materialize([volume], tmp_path, FACTS, sources(SECRET))
    item = {"key": "tls.key", "path": "k", "mode": mode}
    volume = {"name": "v", "secret": {"secretName": "s", "items": [item]}}
    with pytest.raises(VolumeError, match=r'item "tls\.key" mode'):
        materialize([volume], tmp_path, FACTS, sources(SECRET))


@pytest.mark.parametrize(
    ("spec", "owner"),
    [
        ({"containers": [{"name": "a"}]}, VolumeOwner()),
        ({"containers": [{"name": "a", "securityContext": {"runAsUser": 5}}]},
         VolumeOwner(fs_user=5)),
        ({"securityContext": {"runAsUser": 5, "fsGroup": 6},
          "initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
         VolumeOwner(fs_group=6, fs_user=5)),
        ({"initContainers": [{"name": "i", "securityContext": {"runAsUser": 0}}],
          "containers": [{"name": "a", "securityContext": {"runAsUser": 1337}}]},
         VolumeOwner()),
    ],
)  # fmt: skip
def test_the_volume_owner_of_a_pod(spec: dict[str, Any], owner: VolumeOwner) -> None:
    assert volume_owner(spec) == owner


@pytest.mark.parametrize(
    "spec",
    [
        {"securityContext": {"fsGroup": "1337"}, "containers": [{"name": "a"}]},
        {"containers": [{"name": "a", "securityContext": {"runAsUser": [0]}}]},
    ],
)
def test_an_owner_that_is_no_id_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(VolumeError, match="must be an integer from 0 to 2147483647"):
        volume_owner(spec)


def control_plane_pod(tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    objects = control_plane_objects(
        ControlPlaneOptions(revision="1-0"),
        serving_cert="CERT",
        serving_key="KEY",
        ca_files={
            "ca-cert.pem": "C",
            "ca-key.pem": "K",
            "cert-chain.pem": "C",
            "root-cert.pem": "R",
        },
        state_dir=tmp_path / "state",
    )
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return deployment, objects


def test_the_control_plane_objects_are_valid_kubernetes(tmp_path: Path) -> None:
    _, objects = control_plane_pod(tmp_path)
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)


@needs_root
def test_the_control_planes_keys_are_roots_readable_by_its_fs_group_only(tmp_path: Path) -> None:
    deployment, objects = control_plane_pod(tmp_path)
    pod = deployment["spec"]["template"]["spec"]
    secrets = {
        o["metadata"]["name"]: {k: "x" for k in o["data"]} for o in objects if o["kind"] == "Secret"
    }
    volumes = [v for v in pod["volumes"] if "secret" in v]
    lookup = VolumeSources(
        config_maps=lambda name: None, secrets=secrets.get, token=lambda ns, sa: ""
    )
    paths = materialize(volumes, tmp_path / "pod", FACTS, lookup, volume_owner(pod))
    readable_by_the_group = ("0o440", 0, names.PROXY_GID)
    assert files(paths["istiod-tls"]) == dict.fromkeys(
        ["tls.crt", "tls.key"], readable_by_the_group
    )
    assert files(paths["cacerts"]) == dict.fromkeys(
        ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"], readable_by_the_group
    )
