"""A container's environment and command line, resolved as the kubelet resolves them.

Environment: `envFrom` first, then `env` in order; `value` may refer to variables defined
before it as `$(NAME)` (`$$` escapes), `valueFrom` reads the downward API (fieldRef,
resourceFieldRef), ConfigMaps and Secrets. `command` and `args` are then expanded against the
final environment. Images are not pulled: a container runs its `command` on this host, and the
sidemesh image's entrypoint is the `sidemesh` command of this installation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class EnvError(ValueError):
    """The container cannot be configured (CreateContainerConfigError); says what is missing."""


@dataclass(frozen=True)
class PodFacts:
    """What the downward API can tell a container about its pod and node."""

    name: str
    namespace: str
    uid: str
    pod_ip: str
    host_ip: str
    node_name: str
    service_account: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_cpus: int = 1
    node_memory_bytes: int = 1 << 30


Lookup = Callable[[str], Mapping[str, str] | None]  # ConfigMap/Secret name -> data


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, unknown ones kept verbatim,
    `$$` is a literal `$`."""
    out: list[str] = []
    index = 0
    while index < len(text):
        ch = text[index]
        if ch != "$" or index + 1 >= len(text):
            out.append(ch)
            index += 1
            continue
        following = text[index + 1]
        if following == "$":
            out.append("$")
            index += 2
        elif following == "(":
            end = text.find(")", index + 2)
            if end < 0:
                out.append(text[index:])
                break
            name = text[index + 2 : end]
            out.append(variables[name] if name in variables else text[index : end + 1])
            index = end + 1
        else:
            out.append(ch)
            index += 1
    return "".join(out)


def field_value(path: str, facts: PodFacts) -> str:
    simple = {
        "metadata.name": facts.name,
        "metadata.namespace": facts.namespace,
        "metadata.uid": facts.uid,
        "spec.nodeName": facts.node_name,
        "spec.serviceAccountName": facts.service_account,
        "status.hostIP": facts.host_ip,
        "status.hostIPs": facts.host_ip,
        "status.podIP": facts.pod_ip,
        "status.podIPs": facts.pod_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, source in (
        ("metadata.labels", facts.labels),
        ("metadata.annotations", facts.annotations),
    ):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return source.get(path[len(prefix) + 2 : -2], "")
        if path == prefix:
            return downward_api_map(source)
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


def downward_api_map(values: Mapping[str, str]) -> str:
    """The downward API's file format for labels/annotations: sorted `key="value"` lines."""

    def quote(value: str) -> str:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    return "\n".join(f"{k}={quote(v)}" for k, v in sorted(values.items()))


def quantity(text: str) -> Fraction:
    """A resource quantity (`100m`, `128Mi`, `1.5G`, `2e3`), exact; ValueError if it is none.

    lightkube's parser, imported here: only a resourceFieldRef needs it, and importing lightkube
    costs the daemon 0.2 s."""
    from lightkube.utils.quantity import parse_quantity

    value = parse_quantity(text.strip())
    assert value is not None
    return Fraction(value)


def resource_value(ref: Mapping[str, Any], container: Mapping[str, Any], facts: PodFacts) -> str:
    """resourceFieldRef: the limit or request divided by `divisor`, rounded up; a missing limit
    is the node's capacity (as the kubelet reports allocatable)."""
    resource = str(ref.get("resource") or "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise EnvError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)  # requests default to limits
    try:
        if raw is not None:
            amount = quantity(str(raw))
        elif kind == "limits" and name == "cpu":
            amount = Fraction(facts.node_cpus)
        elif kind == "limits":
            amount = Fraction(facts.node_memory_bytes)
        else:
            amount = Fraction(0)
        divisor = quantity(str(ref.get("divisor") or "1"))
    except ValueError as exc:
        raise EnvError(f"resourceFieldRef {resource}: {exc}") from exc
    if divisor == 0:
        divisor = Fraction(1)  # the API server defaults a zero divisor to 1
    return str(math.ceil(amount / divisor))


def _key_ref(kind: str, ref: Mapping[str, Any], lookup: Lookup) -> str | None:
    name, data_key = str(ref.get("name") or ""), str(ref.get("key") or "")
    data = lookup(name)
    if data is None or data_key not in data:
        if ref.get("optional"):
            return None
        missing = (
            f'{kind} "{name}" not found'
            if data is None
            else f'couldn\'t find key {data_key} in {kind} "{name}"'
        )
        raise EnvError(missing)
    return data[data_key]


def resolve_env(
    container: Mapping[str, Any],
    facts: PodFacts,
    *,
    config_maps: Lookup,
    secrets: Lookup,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment the container's process gets."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH, "HOSTNAME": facts.name}
    env.update(base or {})
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, ref_key, lookup in (
            ("configmap", "configMapRef", config_maps),
            ("secret", "secretRef", secrets),
        ):
            ref = source.get(ref_key)
            if ref is None:
                continue
            data = lookup(str(ref.get("name") or ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind} "{ref.get("name")}" not found')
            env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = str(item.get("name") or "")
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        source = item["valueFrom"] or {}
        value: str | None
        if "fieldRef" in source:
            value = field_value(str((source["fieldRef"] or {}).get("fieldPath") or ""), facts)
        elif "resourceFieldRef" in source:
            value = resource_value(source["resourceFieldRef"] or {}, container, facts)
        elif "configMapKeyRef" in source:
            value = _key_ref("configmap", source["configMapKeyRef"] or {}, config_maps)
        elif "secretKeyRef" in source:
            value = _key_ref("secret", source["secretKeyRef"] or {}, secrets)
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def image_repository(image: str) -> str:
    """`ghcr.io/sidemesh/sidemesh:0.1.0@sha256:...` -> `ghcr.io/sidemesh/sidemesh`."""
    repository = image.split("@", 1)[0]
    slash = repository.rfind("/")
    colon = repository.rfind(":")
    return repository[:colon] if colon > slash else repository


def is_sidemesh_image(image: str) -> bool:
    repository = image_repository(image)
    return repository == "sidemesh" or repository.endswith("/sidemesh")


def resolve_argv(
    container: Mapping[str, Any], env: Mapping[str, str], *, sidemesh: list[str]
) -> list[str]:
    """The process to run: `command` + `args`, or the sidemesh entrypoint + `args` for the
    sidemesh image; `$(VAR)` expanded. Other images have no entrypoint here."""
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command:
        if is_sidemesh_image(str(container.get("image") or "")):
            command = list(sidemesh)
        elif not args:
            raise EnvError(
                f"container {container.get('name')!r} has no command: the local runtime does "
                f"not pull or run images, so it needs `command` (image "
                f"{container.get('image')!r})"
            )
    return [expand(part, env) for part in command] + [expand(part, env) for part in args]
