"""What Kubernetes lets change in a running pod, as a pure comparison with reasons.

The API server's pod update validation allows, and nothing else:

* `metadata.labels` and `metadata.annotations`: any change;
* `spec.containers[*].image` and `spec.initContainers[*].image`: the kubelet then restarts
  that container only (its restartCount goes up; the other containers keep running); a
  finished init container is not run again (Kubernetes 1.20+), a native sidecar (an init
  container with `restartPolicy: Always`) is restarted;
* `spec.activeDeadlineSeconds`: set when unset, or lowered; never unset or raised;
* `spec.tolerations`: additions only (every existing toleration kept).

Everything else in `spec` is immutable: env, args, ports, probes, volumes, the set and order
of containers ("pod updates may not change fields other than ..."). Resources can change only
through the `resize` subresource (Kubernetes 1.33+), which this comparison does not use.

The target pod comes from re-injecting the current one, so it lacks what API-server defaulting
added to the current pod (`terminationMessagePath`, port `protocol`, probe thresholds...): a
field the target does not set counts as equal when the current value is that default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

# Fields API-server defaulting fills in, and the value it fills in (None: any value, as for
# imagePullPolicy, whose default depends on the image tag).
SERVER_DEFAULTS: Final[Mapping[str, object]] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": None,
    "protocol": "TCP",
    "apiVersion": "v1",
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
    "scheme": "HTTP",
    "defaultMode": 420,
    "resources": {},
    "divisor": "0",
}
_CONTAINER_LISTS: Final = ("initContainers", "containers")


@dataclass(frozen=True)
class Change:
    """A difference Kubernetes accepts on a running pod."""

    path: str
    detail: str
    container: str | None = None  # set for an image change: the container that restarts


@dataclass(frozen=True)
class Blocker:
    """A difference that only a new pod can carry; `reason` says why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Difference:
    changes: tuple[Change, ...]
    blockers: tuple[Blocker, ...]

    @property
    def in_place(self) -> bool:
        return not self.blockers

    @property
    def restarted_containers(self) -> tuple[str, ...]:
        """Containers whose image changes: the kubelet restarts exactly these."""
        return tuple(c.container for c in self.changes if c.container is not None)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_QUANTITY = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$"
)
_SUFFIXES: Final[Mapping[str, Fraction]] = {
    **{s: Fraction(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Fraction(1000) ** (i + 1) for i, s in enumerate(("k", "M", "G", "T", "P", "E"))},
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
}  # fmt: skip
# Where values are resource quantities, which the API server writes in canonical form
# ("2000m" comes back as "2", "1024Mi" as "1Gi").
_QUANTITY_FIELDS: Final = frozenset({"resources", "divisor"})
# Where the ServiceAccount admission plugin mounts the API token into every container.
SERVICE_ACCOUNT_MOUNT: Final = "/var/run/secrets/kubernetes.io/serviceaccount"


def quantity(value: Any) -> Fraction | None:
    """A Kubernetes resource quantity's value, or None if `value` is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    number, suffix = Fraction(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES.get(suffix, Fraction(1))


def _empty(value: Any) -> bool:
    """What the API server leaves out (Go's `omitempty`): zero, "", false, empty list/map."""
    return value is None or value in (0, "", [], {})


def same(current: Any, target: Any, *, quantities: bool = False) -> bool:
    """Equal as the API server stores them: a key only `current` has counts as equal if it
    holds the server's default, a key only `target` has if its value is empty (omitted when
    stored), and resource quantities compare by value."""
    if isinstance(current, Mapping) and isinstance(target, Mapping):
        for field, value in current.items():
            in_quantities = quantities or field in _QUANTITY_FIELDS
            if field in target:
                if not same(value, target[field], quantities=in_quantities):
                    return False
            elif field not in SERVER_DEFAULTS or (
                SERVER_DEFAULTS[field] is not None and SERVER_DEFAULTS[field] != value
            ):
                return False
        return all(field in current or _empty(value) for field, value in target.items())
    if isinstance(current, list) and isinstance(target, list):
        return len(current) == len(target) and all(
            same(c, t, quantities=quantities) for c, t in zip(current, target, strict=True)
        )
    if quantities and current != target:
        parsed = quantity(current), quantity(target)
        return parsed[0] is not None and parsed[0] == parsed[1]
    return bool(current == target)


def _without_admitted_mounts(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`old` without the API token mount the ServiceAccount admission plugin added to it (the
    target, rendered fresh, has no such mount)."""
    wanted = {m.get("mountPath") for m in _list(new.get("volumeMounts")) if isinstance(m, Mapping)}
    mounts = [
        m
        for m in _list(old.get("volumeMounts"))
        if not (
            isinstance(m, Mapping)
            and m.get("mountPath") == SERVICE_ACCOUNT_MOUNT
            and SERVICE_ACCOUNT_MOUNT not in wanted
        )
    ]
    trimmed = dict(old)
    if mounts:
        trimmed["volumeMounts"] = mounts
    else:
        trimmed.pop("volumeMounts", None)
    return trimmed


def _metadata_changes(current: Mapping[str, Any], target: Mapping[str, Any]) -> list[Change]:
    changes = []
    for field in ("labels", "annotations"):
        old, new = _mapping(current.get(field)), _mapping(target.get(field))
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                verb = "set" if name in new else "removed"
                changes.append(Change(f"metadata.{field}[{name}]", f"{field[:-1]} {verb}"))
    return changes


def _container_differences(
    field: str, current: list[Any], target: list[Any]
) -> tuple[list[Change], list[Blocker]]:
    old_names = [_mapping(c).get("name") for c in current]
    new_names = [_mapping(c).get("name") for c in target]
    if old_names != new_names:
        return [], [
            Blocker(
                f"spec.{field}",
                f"the {field} change from {old_names} to {new_names}: a running pod's "
                "containers cannot be added, removed or reordered",
            )
        ]
    changes: list[Change] = []
    blockers: list[Blocker] = []
    for old, new in zip(current, target, strict=True):
        old = _without_admitted_mounts(old, new)
        name = old.get("name")
        old_image, new_image = old.get("image"), new.get("image")
        if old_image != new_image:
            # a finished init container is not run again (Kubernetes 1.20+); a native sidecar
            # (restartPolicy Always) and a regular container are restarted with the new image
            runs = field == "containers" or old.get("restartPolicy") == "Always"
            detail = f"{old_image} -> {new_image}" + ("" if runs else " (not run again)")
            path = f"spec.{field}[{name}].image"
            changes.append(Change(path, detail, str(name) if runs else None))
        for key in sorted((set(old) | set(new)) - {"image", "name"}):
            if key not in new and key in old and same({key: old[key]}, {}):
                continue
            if not same(old.get(key), new.get(key), quantities=key in _QUANTITY_FIELDS):
                why = (
                    "resources change only through the resize subresource"
                    if key == "resources"
                    else "only a container's image can change in a running pod"
                )
                blockers.append(Blocker(f"spec.{field}[{name}].{key}", why))
    return changes, blockers


def _deadline(current: Any, target: Any) -> tuple[list[Change], list[Blocker]]:
    path = "spec.activeDeadlineSeconds"
    if current == target:
        return [], []
    if isinstance(target, int) and target > 0 and (current is None or target < current):
        return [Change(path, f"{current} -> {target}")], []
    return [], [Blocker(path, "activeDeadlineSeconds can only be set, or lowered")]


def _tolerations(current: Any, target: Any) -> tuple[list[Change], list[Blocker]]:
    old, new = _list(current), _list(target)
    if same(old, new):
        return [], []
    if all(any(same(o, n) for n in new) for o in old):
        added = len(new) - len(old)
        return [Change("spec.tolerations", f"{added} toleration(s) added")], []
    return [], [Blocker("spec.tolerations", "tolerations can only be added, never removed")]


def difference(current: Mapping[str, Any], target: Mapping[str, Any]) -> Difference:
    """How `target` differs from the running pod `current`, and whether it can be patched in."""
    changes = _metadata_changes(_mapping(current.get("metadata")), _mapping(target.get("metadata")))
    blockers: list[Blocker] = []
    old_spec, new_spec = _mapping(current.get("spec")), _mapping(target.get("spec"))
    for field in sorted(set(old_spec) | set(new_spec)):
        old, new = old_spec.get(field), new_spec.get(field)
        if field in _CONTAINER_LISTS:
            found = _container_differences(field, _list(old), _list(new))
        elif field == "activeDeadlineSeconds":
            found = _deadline(old, new)
        elif field == "tolerations":
            found = _tolerations(old, new)
        elif (field not in new_spec and same({field: old}, {})) or same(old, new):
            continue
        else:
            found = [], [Blocker(f"spec.{field}", f"spec.{field} is immutable in a running pod")]
        changes += found[0]
        blockers += found[1]
    return Difference(tuple(changes), tuple(blockers))
