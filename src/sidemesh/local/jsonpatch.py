"""Applying an RFC 6902 JSON Patch, as the API server applies a mutating webhook's answer.

All six operations; the document is copied first, so a patch that fails half way leaves the
original untouched (the API server rejects the whole object in that case too).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any


class PatchError(ValueError):
    """The patch does not apply; the message names the operation and the path."""


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"{token!r} is not an array index")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} is out of range")
    return index


def _parent(document: Any, tokens: list[str], pointer: str) -> tuple[Any, str]:
    target = document
    for token in tokens[:-1]:
        if isinstance(target, dict):
            if token not in target:
                raise PatchError(f"path {pointer!r}: {token!r} does not exist")
            target = target[token]
        elif isinstance(target, list):
            target = target[_index(target, token, for_add=False)]
        else:
            raise PatchError(f"path {pointer!r}: {token!r} is inside a scalar")
    return target, tokens[-1]


def _get(document: Any, pointer: str) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return document
    parent, last = _parent(document, tokens, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"path {pointer!r} is inside a scalar")


def _add(document: Any, pointer: str, value: Any) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return value
    parent, last = _parent(document, tokens, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"path {pointer!r} is inside a scalar")
    return document


def _remove(document: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(document, tokens, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} does not exist")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, last, for_add=False))
    raise PatchError(f"path {pointer!r} is inside a scalar")


def _replace(document: Any, pointer: str, value: Any) -> Any:
    tokens = _tokens(pointer)
    if not tokens:
        return value
    parent, last = _parent(document, tokens, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {pointer!r} does not exist")
        parent[last] = value  # in place: the key keeps its position
    elif isinstance(parent, list):
        parent[_index(parent, last, for_add=False)] = value
    else:
        raise PatchError(f"path {pointer!r} is inside a scalar")
    return document


def apply_patch(document: Any, patch: Sequence[dict[str, Any]]) -> Any:
    result = copy.deepcopy(document)
    for number, operation in enumerate(patch):
        op, path = operation.get("op"), operation.get("path")
        if not isinstance(path, str):
            raise PatchError(f"operation {number} ({op}) has no path")
        try:
            if op == "add":
                result = _add(result, path, copy.deepcopy(operation["value"]))
            elif op == "remove":
                result, _ = _remove(result, path)
            elif op == "replace":
                result = _replace(result, path, copy.deepcopy(operation["value"]))
            elif op == "move":
                source = str(operation["from"])
                if path.startswith(source + "/"):
                    raise PatchError(f"cannot move {source!r} into its own child {path!r}")
                result, value = _remove(result, source)
                result = _add(result, path, value)
            elif op == "copy":
                value = copy.deepcopy(_get(result, str(operation["from"])))
                result = _add(result, path, value)
            elif op == "test":
                if _get(result, path) != operation["value"]:
                    raise PatchError(f"test failed at {path!r}")
            else:
                raise PatchError(f"unknown operation {op!r}")
        except KeyError as exc:
            raise PatchError(f"operation {number} ({op} {path}) lacks {exc}") from None
        except PatchError as exc:
            raise PatchError(f"operation {number} ({op} {path}): {exc}") from None
    return result
