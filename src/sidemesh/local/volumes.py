"""A pod's volumes, materialised as directories under the pod's directory.

emptyDir -> an empty directory (mode 0777, as Kubernetes makes it); hostPath -> the host path;
configMap / secret / downwardAPI / projected -> files written by the runtime (read-only in the
container). A projected `serviceAccountToken` is the pod identity's local token (see
`sidemesh.security.authn.issue_local_token`), which the control plane's CA accepts. Containers
see the directories at their `mountPath`s through bind mounts in their own mount namespace
(`launch`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidemesh.api import kube_names
from sidemesh.local.env import EnvError, PodFacts, field_value
from sidemesh.security.files import write_atomically

Lookup = Callable[[str], Mapping[str, str] | None]
TokenSource = Callable[[str, str], str]  # (namespace, service account) -> token
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")


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
class VolumeSources:
    config_maps: Lookup
    secrets: Lookup
    token: TokenSource


def _key_files(
    kind: str, spec: Mapping[str, Any], data: Mapping[str, str] | None, name: str
) -> dict[str, tuple[str, int | None]]:
    if data is None:
        if spec.get("optional"):
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    items = spec.get("items")
    if not items:
        return {k: (v, None) for k, v in data.items()}
    files = {}
    for item in items:
        item_key = str(item.get("key"))
        if item_key not in data:
            if spec.get("optional"):
                continue
            raise VolumeError(f'{kind} "{name}" has no key "{item_key}"')
        files[str(item.get("path") or item_key)] = (data[item_key], item.get("mode"))
    return files


def _downward_files(spec: Mapping[str, Any], facts: PodFacts) -> dict[str, tuple[str, int | None]]:
    files = {}
    for item in spec.get("items") or []:
        field = (item.get("fieldRef") or {}).get("fieldPath")
        if not field:
            raise VolumeError(f"downwardAPI item {item.get('path')!r}: only fieldRef is supported")
        try:
            value = field_value(str(field), facts)
        except EnvError as exc:
            raise VolumeError(str(exc)) from exc
        files[str(item["path"])] = (value, item.get("mode"))
    return files


def _projected_files(
    spec: Mapping[str, Any], facts: PodFacts, sources: VolumeSources
) -> dict[str, tuple[str, int | None]]:
    files: dict[str, tuple[str, int | None]] = {}
    for source in spec.get("sources") or []:
        if "serviceAccountToken" in source:
            token_spec = source["serviceAccountToken"] or {}
            token = sources.token(facts.namespace, facts.service_account)
            files[str(token_spec.get("path") or "token")] = (token, None)
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


def materialize(
    volumes: list[dict[str, Any]], pod_dir: Path, facts: PodFacts, sources: VolumeSources
) -> dict[str, Path]:
    """Create every volume; returns volume name -> host path."""
    paths: dict[str, Path] = {}
    for volume in volumes:
        name = str(volume.get("name"))
        if kube_names.dns1123_label(name):
            raise VolumeError(f"volume name {name!r} is not a DNS-1123 label")
        directory = pod_dir / "volumes" / name
        files: dict[str, tuple[str, int | None]] | None = None
        default_mode = 0o644
        if "emptyDir" in volume:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o777)
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
            default_mode = int(spec.get("defaultMode") or 0o644)
        elif "secret" in volume:
            spec = volume["secret"] or {}
            ref = str(spec.get("secretName"))
            files = _key_files("secret", spec, sources.secrets(ref), ref)
            default_mode = int(spec.get("defaultMode") or 0o644)
        elif "downwardAPI" in volume:
            files = _downward_files(volume["downwardAPI"] or {}, facts)
        elif "projected" in volume:
            spec = volume["projected"] or {}
            files = _projected_files(spec, facts, sources)
            default_mode = int(spec.get("defaultMode") or 0o644)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(
                f"volume {name!r}: {', '.join(kinds)} volumes are not supported "
                "locally (emptyDir, hostPath, configMap, secret, downwardAPI and "
                "projected are)"
            )
        if files is not None:
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)
            for relative, (text, mode) in files.items():
                # Created with its final mode before the first byte (a Secret's key never
                # readable by others, not even briefly).
                target = below(directory, relative, f"volume {name!r}: item path")
                write_atomically(target, text.encode(), mode or default_mode)
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
