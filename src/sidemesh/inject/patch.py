"""RFC 6902 JSON Patch between the pod as admitted and the pod as injected, in linear time.

Injection shares every untouched subtree with the original, so identical objects are skipped
by identity before any comparison. Lists are aligned by a common prefix and suffix (containers
keep their order around the ones injection inserts or removes); anything else in a list is
replaced whole. No generic quadratic diff, so a pod with thousands of env vars costs what its
size costs.
"""

from __future__ import annotations

from typing import Any

import orjson

Operation = dict[str, Any]


def _escape(token: str) -> str:
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def _same_slot(old: Any, new: Any) -> bool:
    """Whether two list items are the same element (possibly changed): same `name`, or equal."""
    if old is new:
        return True
    if isinstance(old, dict) and isinstance(new, dict) and "name" in old:
        return bool(old.get("name") == new.get("name"))
    return bool(old == new)


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{_escape(key)}", "value": value})
            elif old[key] is not value:  # shared subtrees are the common case: skip cheaply
                _diff(old[key], value, f"{path}/{_escape(key)}", ops)
        return
    if isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
        return
    if type(old) is not type(new) or old != new:
        ops.append({"op": "replace", "path": path, "value": new})


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Operation]) -> None:
    limit = min(len(old), len(new))
    prefix = 0
    while prefix < limit and _same_slot(old[prefix], new[prefix]):
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and _same_slot(old[-1 - suffix], new[-1 - suffix]):
        suffix += 1
    old_middle = len(old) - prefix - suffix
    new_middle = len(new) - prefix - suffix
    if old_middle and new_middle:
        ops.append({"op": "replace", "path": path, "value": new})
        return
    for i in range(prefix):
        _diff(old[i], new[i], f"{path}/{i}", ops)
    for _ in range(old_middle):
        ops.append({"op": "remove", "path": f"{path}/{prefix}"})
    for offset in range(new_middle):
        index = prefix + offset
        ops.append({"op": "add", "path": f"{path}/{index}", "value": new[index]})
    for back in range(suffix, 0, -1):
        _diff(old[-back], new[-back], f"{path}/{len(new) - back}", ops)


def create_patch(old: Any, new: Any) -> list[Operation]:
    ops: list[Operation] = []
    _diff(old, new, "", ops)
    return ops


def encode_patch(old: Any, new: Any) -> bytes:
    return orjson.dumps(create_patch(old, new))
