"""A pod's volumes, materialised as directories under the pod's directory.

emptyDir -> an empty directory (mode 0777, as Kubernetes makes it); hostPath -> the host path;
configMap / secret / downwardAPI / projected -> files written by the runtime (read-only in the
container). A projected `serviceAccountToken` is the pod identity's local token (see
`sidemesh.security.authn.issue_local_token`), which the control plane's CA accepts. Containers
see the directories at their `mountPath`s through bind mounts in their own mount namespace
(`launch`).

Files get the modes the pod spec says (`defaultMode`, an item's `mode`; 0644 by default), each
created with its final mode before its first byte. Ownership as the kubelet sets it:

* `fsGroup`: the volume's files and directories belong to that group, which may read them
  (`mode | 0440`; directories also setgid), and an emptyDir is group-writable for it;
* a projected `serviceAccountToken` is 0600 when the pod has an fsGroup or all its containers
  run as one user, and is then owned by that user (so a sidecar's token is its alone).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidemesh.api import kube_names
from sidemesh.local.env import EnvError, PodFacts, field_value
from sidemesh.local.privileges import MAX_ID, is_id
from sidemesh.security.files import write_atomically

Lookup = Callable[[str], Mapping[str, str] | None]
TokenSource = Callable[[str, str], str]  # (namespace, service account) -> token
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")
DEFAULT_MODE = 0o644
TOKEN_MODE = 0o600
GROUP_READ = 0o440  # what fsGroup adds to a read-only volume's files (the kubelet's roMask)


class VolumeError(ValueError):
    """A volume cannot be set up (the pod stays in ContainerCreating); says which and why."""


def below(
    directory: Path,
    relative: str,
    what: str,
    rule: Callable[[str], list[str]] = kube_names.item_path,
) -> Path:
    """`directory / relative`, refused unless it stays below `directory` (no absolute path, no
    `..`, no symbolic link out): apply refuses such paths already; this holds for pods that
    came another way (a stored state, a node's API server)."""
    reasons = rule(relative) if relative else ["must not be empty"]
    target = directory / relative
    resolved, base = Path(os.path.realpath(target)), Path(os.path.realpath(directory))
    if not reasons and not resolved.is_relative_to(base):
        reasons = ["leads out of the volume through a symbolic link"]
    if reasons:
        raise VolumeError(f"{what} {relative!r}: {'; '.join(reasons)}")
    return target


@dataclass(frozen=True)
class VolumeOwner:
    """Who the pod's volume files belong to (the kubelet's fsGroup and fsUser)."""

    fs_group: int | None = None
    fs_user: int | None = None  # the one runAsUser all containers share, if they do


def volume_owner(pod_spec: Mapping[str, Any]) -> VolumeOwner:
    pod_security = pod_spec.get("securityContext") or {}
    containers = [
        *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("containers") or []),
    ]
    users = [
        (c.get("securityContext") or {}).get("runAsUser", pod_security.get("runAsUser"))
        for c in containers
    ]
    only = users[0] if users and all(u == users[0] for u in users) else None
    fs_group = pod_security.get("fsGroup")
    for what, value in (("fsGroup", fs_group), ("runAsUser", only)):
        if value is not None and not is_id(value):
            raise VolumeError(f"{what} {value!r}: must be an integer from 0 to {MAX_ID}")
    return VolumeOwner(fs_group=fs_group, fs_user=only)


def file_mode(raw: object, what: str) -> int:
    """A `defaultMode` or `mode`: 0 to 0777 (no setuid, setgid or sticky bit)."""
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 0o777:
        raise VolumeError(f"{what} {raw!r}: must be a number between 0 and 0777 (octal)")
    return raw


def _spec_mode(spec: Mapping[str, Any], what: str) -> int:
    raw = spec.get("defaultMode")
    return DEFAULT_MODE if raw is None else file_mode(raw, what)


@dataclass(frozen=True)
class VolumeFile:
    text: str
    mode: int | None  # None: the volume's defaultMode
    user: int | None = None  # the owner; None: root


@dataclass(frozen=True)
class VolumeSources:
    config_maps: Lookup
    secrets: Lookup
    token: TokenSource


Files = dict[str, VolumeFile]  # path in the volume -> file


def _key_files(
    kind: str, spec: Mapping[str, Any], data: Mapping[str, str] | None, name: str
) -> Files:
    if data is None:
        if spec.get("optional"):
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    items = spec.get("items")
    if not items:
        return {k: VolumeFile(v, None) for k, v in data.items()}
    files = {}
    for item in items:
        item_key = str(item.get("key"))
        if item_key not in data:
            if spec.get("optional"):
                continue
            raise VolumeError(f'{kind} "{name}" has no key "{item_key}"')
        mode = item.get("mode")
        what = f'{kind} "{name}" item "{item_key}" mode'
        files[str(item.get("path") or item_key)] = VolumeFile(
            data[item_key], None if mode is None else file_mode(mode, what)
        )
    return files


def _downward_files(spec: Mapping[str, Any], facts: PodFacts) -> Files:
    files = {}
    for item in spec.get("items") or []:
        field = (item.get("fieldRef") or {}).get("fieldPath")
        if not field:
            raise VolumeError(f"downwardAPI item {item.get('path')!r}: only fieldRef is supported")
        try:
            value = field_value(str(field), facts)
        except EnvError as exc:
            raise VolumeError(str(exc)) from exc
        mode = item.get("mode")
        what = f"downwardAPI item {item.get('path')!r} mode"
        files[str(item["path"])] = VolumeFile(
            value, None if mode is None else file_mode(mode, what)
        )
    return files


def _projected_files(
    spec: Mapping[str, Any], facts: PodFacts, sources: VolumeSources, owner: VolumeOwner
) -> Files:
    files: Files = {}
    for source in spec.get("sources") or []:
        if "serviceAccountToken" in source:
            token_spec = source["serviceAccountToken"] or {}
            token = sources.token(facts.namespace, facts.service_account)
            private = owner.fs_user is not None or owner.fs_group is not None
            files[str(token_spec.get("path") or "token")] = VolumeFile(
                token, TOKEN_MODE if private else None, owner.fs_user
            )
        elif "configMap" in source:
            ref = source["configMap"] or {}
            name = str(ref.get("name"))
            files.update(_key_files("configmap", ref, sources.config_maps(name), name))
        elif "secret" in source:
            ref = source["secret"] or {}
            name = str(ref.get("name"))
            files.update(_key_files("secret", ref, sources.secrets(name), name))
        elif "downwardAPI" in source:
            files.update(_downward_files(source["downwardAPI"] or {}, facts))
        else:
            raise VolumeError(f"projected source {sorted(source)} is not supported locally")
    return files


def _write_files(
    directory: Path, name: str, files: Files, default_mode: int, owner: VolumeOwner
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    group = owner.fs_group
    os.chmod(directory, 0o755)
    if group is not None:
        os.chown(directory, -1, group)
        os.chmod(directory, 0o2755)
    for relative, file in files.items():
        target = below(directory, relative, f"volume {name!r}: item path")
        mode = default_mode if file.mode is None else file.mode
        if group is not None:
            mode |= GROUP_READ
        # Created with its final mode before the first byte (a Secret's key never readable by
        # others, not even briefly), then given to its owner.
        write_atomically(target, file.text.encode(), mode)
        if file.user is not None or group is not None:
            os.chown(target, -1 if file.user is None else file.user, -1 if group is None else group)


def materialize(
    volumes: list[dict[str, Any]],
    pod_dir: Path,
    facts: PodFacts,
    sources: VolumeSources,
    owner: VolumeOwner | None = None,
) -> dict[str, Path]:
    """Create every volume; returns volume name -> host path."""
    owner = owner or VolumeOwner()
    paths: dict[str, Path] = {}
    for volume in volumes:
        name = str(volume.get("name"))
        if kube_names.dns1123_label(name):
            raise VolumeError(f"volume name {name!r} is not a DNS-1123 label")
        directory = pod_dir / "volumes" / name
        files: Files | None = None
        default_mode = DEFAULT_MODE
        if "emptyDir" in volume:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o777)
            if owner.fs_group is not None:
                os.chown(directory, -1, owner.fs_group)
                os.chmod(directory, 0o2777)
        elif "hostPath" in volume:
            host = volume["hostPath"] or {}
            directory = Path(str(host.get("path")))
            kind = host.get("type") or ""
            if kind == "DirectoryOrCreate":
                directory.mkdir(parents=True, exist_ok=True)
            elif kind in ("Directory", "File", "Socket") and not directory.exists():
                raise VolumeError(f"hostPath {directory} ({kind}) does not exist")
        elif "configMap" in volume:
            spec = volume["configMap"] or {}
            ref = str(spec.get("name"))
            files = _key_files("configmap", spec, sources.config_maps(ref), ref)
            default_mode = _spec_mode(spec, f"volume {name!r}: defaultMode")
        elif "secret" in volume:
            spec = volume["secret"] or {}
            ref = str(spec.get("secretName"))
            files = _key_files("secret", spec, sources.secrets(ref), ref)
            default_mode = _spec_mode(spec, f"volume {name!r}: defaultMode")
        elif "downwardAPI" in volume:
            spec = volume["downwardAPI"] or {}
            files = _downward_files(spec, facts)
            default_mode = _spec_mode(spec, f"volume {name!r}: defaultMode")
        elif "projected" in volume:
            spec = volume["projected"] or {}
            files = _projected_files(spec, facts, sources, owner)
            default_mode = _spec_mode(spec, f"volume {name!r}: defaultMode")
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(
                f"volume {name!r}: {', '.join(kinds)} volumes are not supported "
                "locally (emptyDir, hostPath, configMap, secret, downwardAPI and "
                "projected are)"
            )
        if files is not None:
            _write_files(directory, name, files, default_mode, owner)
        paths[name] = directory
    return paths


def container_mounts(
    container: Mapping[str, Any], volumes: list[dict[str, Any]], paths: Mapping[str, Path]
) -> list[dict[str, Any]]:
    """The bind mounts one container needs: source on the host, target in the container."""
    kinds = {str(v.get("name")): next((k for k in v if k != "name"), "") for v in volumes}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        name = str(mount.get("name"))
        if name not in paths:
            raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
        source = paths[name]
        if mount.get("subPath"):
            sub_path = str(mount["subPath"])
            what = f"volumeMount {name!r}: subPath"
            source = below(source, sub_path, what, kube_names.descending_path)
            if not source.exists():
                source.mkdir(parents=True, exist_ok=True)
        mounts.append(
            {
                "source": str(source),
                "target": str(mount.get("mountPath")),
                "readonly": bool(mount.get("readOnly")) or kinds.get(name) in READ_ONLY_KINDS,
            }
        )
    return mounts
