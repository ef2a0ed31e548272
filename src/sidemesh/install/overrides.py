"""Reading install values: `-f values.yaml` files, then `--set key=value` assignments.

Everything is checked before anything is applied: each file on its own (so an error names the
file and the key), each `--set` key against the values model (so a typo names the key and
suggests the closest one), then the merged result.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel

from sidemesh.api.config import ConfigError, load_yaml_file, parse_model
from sidemesh.install.values import InstallValues

_KEY_SPLIT = re.compile(r"(?<!\\)\.")
_REVISION = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_REVISION_LENGTH = 56  # `istiod-REV` must stay a valid 63-character Service name


@dataclass(frozen=True)
class Assignment:
    """One `--set key=value`."""

    text: str
    path: tuple[str, ...]
    value: Any


def parse_assignment(text: str) -> Assignment:
    """Parse and check one `--set`; raises ConfigError naming the key."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: expected key=value")
    path = tuple(part.replace("\\.", ".") for part in _KEY_SPLIT.split(key.strip()))
    if any(not part for part in path):
        raise ConfigError(f"--set {text}: empty key segment in {key!r}")
    target = _resolve(InstallValues, path, (), text)
    return Assignment(text=text, path=path, value=_convert(raw, target))


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or n): f.annotation for n, f in model.model_fields.items()}


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _resolve(annotation: Any, path: tuple[str, ...], done: tuple[str, ...], text: str) -> Any:
    if not path:
        return annotation
    annotation = _unwrap_optional(annotation)
    head, rest = path[0], path[1:]
    where = ".".join(done) if done else "the top level"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = _fields(annotation)
        if head not in fields:
            close = difflib.get_close_matches(head, fields, n=1)
            hint = f"; did you mean {'.'.join((*done, close[0]))}?" if close else ""
            raise ConfigError(
                f"--set {text}: unknown key {'.'.join((*done, head))!r} "
                f"(known under {where}: {', '.join(sorted(fields))}){hint}"
            )
        return _resolve(fields[head], rest, (*done, head), text)
    if get_origin(annotation) in (dict, Mapping):
        return _resolve(get_args(annotation)[1], rest, (*done, head), text)
    if annotation is Any:
        return Any
    raise ConfigError(
        f"--set {text}: {where} is a single value, it has no key {head!r} "
        "(set a list whole, e.g. key={a,b} or key=[a, b])"
    )


def _is_text(annotation: Any) -> bool:
    annotation = _unwrap_optional(annotation)
    if annotation is str:
        return True
    return get_origin(annotation) is Literal and all(
        isinstance(a, str) for a in get_args(annotation)
    )


def _convert(raw: str, target: Any) -> Any:
    """Strings stay strings where the model wants text (`global.tag=1.10` is not a float);
    elsewhere the value is read as YAML, and Helm's `{a,b}` is a list."""
    if _is_text(target):
        return raw
    if raw.startswith("{") and raw.endswith("}") and ":" not in raw:
        return [_convert(item.strip(), Any) for item in raw[1:-1].split(",") if item.strip()]
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _assign(data: dict[str, Any], assignment: Assignment) -> dict[str, Any]:
    nested: Any = assignment.value
    for key in reversed(assignment.path):
        nested = {key: nested}
    return _merge(data, nested)


def check_revision(revision: str) -> str:
    if not _REVISION.match(revision) or len(revision) > MAX_REVISION_LENGTH:
        raise ConfigError(
            f"revision {revision!r} is not a valid revision name: lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit, at most "
            f"{MAX_REVISION_LENGTH} characters"
        )
    return revision


def load_install_values(
    files: Sequence[Path], sets: Sequence[str], *, revision: str | None
) -> tuple[InstallValues, str]:
    """The validated values and the revision they install; raises ConfigError."""
    merged: dict[str, Any] = {}
    for path in files:
        data = load_yaml_file(path)
        parse_model(InstallValues, data, str(path))  # names the file and the bad key
        merged = _merge(merged, data or {})
    assignments = [parse_assignment(text) for text in sets]
    for assignment in assignments:
        merged = _assign(merged, assignment)
    source = "values" + (f" (after --set {', '.join(a.text for a in assignments)})" if sets else "")
    values = parse_model(InstallValues, merged, source)
    from_values = values.revision or None
    if revision and from_values and revision != from_values:
        raise ConfigError(
            f"--revision {revision} contradicts revision: {from_values} in the values; "
            "give one of them"
        )
    chosen = check_revision(revision or from_values or "default")
    return values, chosen
