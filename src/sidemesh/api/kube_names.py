"""Kubernetes' rules for names, keys and relative paths, with its own words.

The local runtime turns names into directories and files as root, so it refuses what the API
server would refuse before anything reaches the disk: object names (a DNS-1123 subdomain, a
DNS-1123 label for namespaces, a DNS-1035 label for services), container and volume names
(DNS-1123 labels), ConfigMap and Secret keys (`[-._a-zA-Z0-9]+`, never `.`/`..`), and the
relative paths of volume items and subPaths (never absolute, never through `..`). Each check
returns the reasons a value is invalid, in `k8s.io/apimachinery/pkg/util/validation`'s words;
an empty list means valid. `object_errors` walks a whole manifest and returns kubectl-style
field errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

DNS1123_LABEL_MAX: Final = 63
DNS1123_SUBDOMAIN_MAX: Final = 253
CONFIG_KEY_MAX: Final = 253

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + ")*"
_DNS1035 = "[a-z]([-a-z0-9]*[a-z0-9])?"
_CONFIG_KEY = "[-._a-zA-Z0-9]+"
_LABEL_VALUE = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
LABEL_VALUE_MAX: Final = 63

LABEL_MESSAGE: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    f"regex used for validation is '{_LABEL}')"
)
SUBDOMAIN_MESSAGE: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    f"regex used for validation is '{_SUBDOMAIN}')"
)
DNS1035_MESSAGE: Final = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    f"'abc-123', regex used for validation is '{_DNS1035}')"
)
CONFIG_KEY_MESSAGE: Final = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    f"'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '{_CONFIG_KEY}')"
)

LABEL_VALUE_MESSAGE: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
)


def _too_long(value: str, limit: int) -> list[str]:
    return [f"must be no more than {limit} characters"] if len(value) > limit else []


def dns1123_label(value: str) -> list[str]:
    """Namespaces, containers, volumes, ports' names."""
    found = _too_long(value, DNS1123_LABEL_MAX)
    return found if re.fullmatch(_LABEL, value) else [*found, LABEL_MESSAGE]


def dns1123_subdomain(value: str) -> list[str]:
    """Most object names: pods, deployments, config maps, secrets, service accounts."""
    found = _too_long(value, DNS1123_SUBDOMAIN_MAX)
    return found if re.fullmatch(_SUBDOMAIN, value) else [*found, SUBDOMAIN_MESSAGE]


def dns1035_label(value: str) -> list[str]:
    """Service names (they become DNS names and environment variable prefixes)."""
    found = _too_long(value, DNS1123_LABEL_MAX)
    return found if re.fullmatch(_DNS1035, value) else [*found, DNS1035_MESSAGE]


def label_value(value: str) -> list[str]:
    """A label's value (empty is allowed)."""
    found = _too_long(value, LABEL_VALUE_MAX)
    return found if re.fullmatch(_LABEL_VALUE, value) else [*found, LABEL_VALUE_MESSAGE]


def as_label_value(text: str) -> str:
    """`text` made a valid label value: characters a label value cannot hold dropped, cut to
    63 characters, then the '-', '_' and '.' a value may not start or end with trimmed (so a
    name cut in the middle of `...-blue` does not end in '-')."""
    kept = re.sub(r"[^-A-Za-z0-9_.]", "", text)[:LABEL_VALUE_MAX]
    return kept.strip("-_.")


def config_key(value: str) -> list[str]:
    """A ConfigMap's or Secret's data key: it becomes a file name in a volume."""
    found = _too_long(value, CONFIG_KEY_MAX)
    if not re.fullmatch(_CONFIG_KEY, value):
        found.append(CONFIG_KEY_MESSAGE)
    if value in (".", ".."):
        found.append(f"must not be '{value}'")
    elif value.startswith(".."):
        found.append("must not start with '..'")
    return found


def descending_path(value: str) -> list[str]:
    """A path that stays below its directory (a subPath): relative, no `..` segment."""
    found = []
    if value.startswith("/"):
        found.append("must be a relative path")
    if ".." in value.split("/"):
        found.append("must not contain '..'")
    return found


def item_path(value: str) -> list[str]:
    """A volume item's path (Kubernetes' ValidateLocalNonReservedPath): a descending path that
    does not start with `..` (the atomic writer's reserved names)."""
    found = descending_path(value)
    if value.startswith(".."):
        found.append("must not start with '..'")
    return found


# --- whole objects ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    path: str  # e.g. spec.containers[0].name
    value: str
    reason: str  # "Required value", or why the value is invalid

    def __str__(self) -> str:
        if self.reason == "Required value":
            return f"{self.path}: Required value"
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.path}: Invalid value: "{quoted}": {self.reason}'


NAME_RULES: Final[dict[str, Callable[[str], list[str]]]] = {
    "Namespace": dns1123_label,
    "Service": dns1035_label,
}  # every other kind: DNS-1123 subdomain


def object_errors(kind: str, obj: Mapping[str, Any]) -> list[FieldError]:
    """Every invalid name, key and path of a manifest the local runtime stores or runs."""
    metadata = _mapping(obj.get("metadata"))
    name = metadata.get("name")
    errors: list[FieldError] = []
    if isinstance(name, str) and name:
        errors += _check("metadata.name", name, NAME_RULES.get(kind, dns1123_subdomain))
    if kind == "Pod":
        errors += pod_spec_errors(_mapping(obj.get("spec")), "spec")
    elif kind == "Deployment":
        template = _mapping(_mapping(obj.get("spec")).get("template"))
        errors += pod_spec_errors(_mapping(template.get("spec")), "spec.template.spec")
    elif kind == "ConfigMap":
        for field in ("data", "binaryData"):
            errors += _key_errors(field, obj.get(field))
    elif kind == "Secret":  # stringData is merged into data before validation: its name
        for field in ("data", "stringData"):
            errors += _key_errors("data", obj.get(field))
    return errors


def invalid_message(kind: str, name: str, errors: list[FieldError]) -> str:
    """kubectl's: `The Pod "x" is invalid: metadata.name: Invalid value: "x": ...`, several
    errors listed as `[a, b]`."""
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    return f'The {kind} "{name}" is invalid: {text}'


def pod_spec_errors(spec: Mapping[str, Any], at: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_list(spec.get(group))):
            where = f"{at}.{group}[{index}]"
            errors += _check(f"{where}.name", container.get("name"), dns1123_label)
            for number, mount in enumerate(_list(container.get("volumeMounts"))):
                sub_path = mount.get("subPath")
                if isinstance(sub_path, str) and sub_path:
                    path = f"{where}.volumeMounts[{number}].subPath"
                    errors += _check(path, sub_path, descending_path)
    for index, volume in enumerate(_list(spec.get("volumes"))):
        where = f"{at}.volumes[{index}]"
        errors += _check(f"{where}.name", volume.get("name"), dns1123_label)
        errors += list(_volume_source_errors(volume, where))
    return errors


def _volume_source_errors(volume: Mapping[str, Any], at: str) -> Iterator[FieldError]:
    for kind in ("configMap", "secret", "downwardAPI"):
        if kind in volume:
            yield from _items_errors(_mapping(volume[kind]), f"{at}.{kind}")
    if "projected" in volume:
        sources = _list(_mapping(volume["projected"]).get("sources"))
        for index, source in enumerate(sources):
            where = f"{at}.projected.sources[{index}]"
            for kind in ("configMap", "secret", "downwardAPI"):
                if kind in source:
                    yield from _items_errors(_mapping(source[kind]), f"{where}.{kind}")
            if "serviceAccountToken" in source:
                token = _mapping(source["serviceAccountToken"])
                path = token.get("path")
                if isinstance(path, str) and path:
                    yield from _check(f"{where}.serviceAccountToken.path", path, item_path)


def _items_errors(spec: Mapping[str, Any], at: str) -> Iterator[FieldError]:
    for index, item in enumerate(_list(spec.get("items"))):
        where = f"{at}.items[{index}]"
        path = item.get("path")
        if not isinstance(path, str) or not path:
            yield FieldError(f"{where}.path", "", "Required value")
            continue
        yield from _check(f"{where}.path", path, item_path)
        key = item.get("key")
        if isinstance(key, str):
            yield from _check(f"{where}.key", key, config_key)


def _key_errors(field: str, data: Any) -> list[FieldError]:
    if not isinstance(data, Mapping):
        return []
    return [error for key in data for error in _check(f"{field}[{key}]", str(key), config_key)]


def _check(path: str, value: Any, rule: Callable[[str], list[str]]) -> list[FieldError]:
    if not isinstance(value, str) or not value:
        return [FieldError(path, "", "Required value")]
    return [FieldError(path, value, reason) for reason in rule(value)]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
