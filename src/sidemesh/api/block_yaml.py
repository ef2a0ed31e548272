"""YAML text byte for byte as `yaml.dump(data, Dumper=CSafeDumper, sort_keys=False,
default_flow_style=False)` writes it, several times faster for manifests.

PyYAML's representer is pure Python and costs milliseconds for an injected pod, most of it
deciding again how to write the same few hundred scalars. Here each distinct scalar is written
once by PyYAML itself (and remembered) and the block layout around it, which is fixed
(2-space indent, sequences in mappings not indented, `{}`/`[]` for empty collections), is
written directly. Whatever could make the text depend on more than the value (a scalar that
might be folded at the 80-column width, a multi-line or long key, an object met twice, which
PyYAML writes as an anchor and alias, a type other than JSON's) sends the whole document to
PyYAML, so the bytes are always PyYAML's.
"""

from __future__ import annotations

import marshal
import re
from typing import Any

import yaml
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

WIDTH = 80  # PyYAML's default best_width: plain and quoted scalars may be folded past it
LONGEST_SIMPLE_KEY = 120  # libyaml writes keys of 128+ characters as `? key` (margin kept)
_SCALAR_TYPES = (str, int, float, bool, type(None))
# Strings PyYAML's analysis lets through plain (unquoted) in block context, when they do not
# read as another type: no indicator first or last, no space, no quote, ASCII only.
_PLAIN = re.compile(r"[A-Za-z0-9_/](?:[A-Za-z0-9_./=+:-]*[A-Za-z0-9_./=+-])?")
_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = Resolver()


def pyyaml_dump(data: Any) -> str:
    """The reference: what every manifest writer printed before this module."""
    return yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)


class _NotSimple(Exception):
    """This document needs PyYAML's own writer."""


class BlockWriter:
    """Writes documents; keeps what it learnt about scalars (bounded) between documents.

    The hot path is the two loops below, kept flat on purpose (measured: a call per scalar
    cost a third of the time): a cache lookup per key and value, the layout by hand."""

    def __init__(self, *, cache_size: int = 8192) -> None:
        self._cache_size = cache_size
        # text of each scalar, "" when PyYAML must write it; strings are their own cache key,
        # other scalars (type, repr) as 1 == 1.0 == True and 0.0 == -0.0
        self._values: dict[Any, str] = {}
        self._keys: dict[Any, str] = {}
        self._items: dict[tuple[bytes, str], str] = {}  # see dump(unshared=True)
        self._memo_on = False

    def dump(self, data: Any, *, unshared: bool = False) -> str:
        """Exactly `pyyaml_dump(data)`.

        `unshared` promises that no list or dict appears twice in `data` (true of what the
        streaming reader builds, which refuses anchors, and of what injection makes from it):
        then the text of a list item that is a mapping (a container, a volume, an env entry)
        is remembered by its content and reused, as replicas repeat them."""
        if (type(data) is dict or type(data) is list) and data:
            out: list[str] = []
            self._memo_on = unshared
            try:
                if isinstance(data, dict):
                    self._mapping(data, 0, "", out, set())
                else:
                    self._sequence(data, 0, "", out, set(), unshared)
            except _NotSimple:
                return pyyaml_dump(data)
            return "".join(out)
        return pyyaml_dump(data)

    def _mapping(
        self, data: dict[Any, Any], indent: int, first: str, out: list[str], seen: set[int]
    ) -> None:
        if id(data) in seen:  # PyYAML writes `&id001` ... `*id001`
            raise _NotSimple
        seen.add(id(data))
        keys, values = self._keys, self._values
        pad = " " * indent
        prefix = first
        for key, value in data.items():
            text = keys.get(key) if type(key) is str else None
            if not text:
                text = self._key(key)
            line = f"{prefix}{text}:"
            prefix = pad
            kind = type(value)
            if kind is str:
                text = values.get(value)
                if not text:
                    text = self._value(value)
                if len(line) + len(text) >= WIDTH:
                    self._check_width(line, text)
                out.append(f"{line} {text}\n")
            elif kind is dict and value:
                out.append(line + "\n")
                self._mapping(value, indent + 2, " " * (indent + 2), out, seen)
            elif kind is list and value:
                out.append(line + "\n")
                self._sequence(value, indent, pad, out, seen, self._memo_on)
            else:
                out.append(self._scalar_line(line, value, seen))

    def _sequence(
        self,
        data: list[Any],
        indent: int,
        first: str,
        out: list[str],
        seen: set[int],
        unshared: bool = False,
    ) -> None:
        if id(data) in seen:
            raise _NotSimple
        seen.add(id(data))
        pad = " " * indent
        prefix = first
        memo_on, self._memo_on = self._memo_on, unshared
        for item in data:
            line = prefix + "-"
            prefix = pad
            kind = type(item)
            if kind is dict and item:
                if unshared and indent:
                    self._remembered_item(item, indent, line, out, seen)
                else:
                    self._mapping(item, indent + 2, line + " ", out, seen)
            elif kind is list and item:
                self._sequence(item, indent + 2, line + " ", out, seen)
            else:
                out.append(self._scalar_line(line, item, seen))
        self._memo_on = memo_on

    def _remembered_item(
        self, item: dict[Any, Any], indent: int, line: str, out: list[str], seen: set[int]
    ) -> None:
        try:
            key = (marshal.dumps(item), line)  # exact types and order; datetimes refuse
        except ValueError:
            self._mapping(item, indent + 2, line + " ", out, seen)
            return
        text = self._items.get(key)
        if text is None:
            written: list[str] = []
            self._mapping(item, indent + 2, line + " ", written, seen)
            text = "".join(written)
            if len(self._items) >= self._cache_size // 8:
                self._items.clear()
            self._items[key] = text
        out.append(text)

    def _scalar_line(self, line: str, value: Any, seen: set[int]) -> str:
        kind = type(value)
        if kind is dict or kind is list:  # empty (non-empty ones were handled by the caller)
            if id(value) in seen:
                raise _NotSimple
            seen.add(id(value))
            return f"{line} {'{}' if kind is dict else '[]'}\n"
        text = self._value(value)
        if len(line) + len(text) >= WIDTH:
            self._check_width(line, text)
        return f"{line} {text}\n"

    @staticmethod
    def _check_width(line: str, text: str) -> None:
        if len(line) + 1 + len(text) > WIDTH and (" " in text or text[0] == '"'):
            raise _NotSimple  # PyYAML may fold it, depending on the column

    def _value(self, value: Any) -> str:
        return self._learn(self._values, value, as_key=False)

    def _key(self, key: Any) -> str:
        return self._learn(self._keys, key, as_key=True)

    def _learn(self, cache: dict[Any, str], scalar: Any, *, as_key: bool) -> str:
        """The scalar's one-line text (PyYAML's) as a value or a simple key, or _NotSimple."""
        cache_key = _cache_key(scalar)
        text = cache.get(cache_key)
        if text is None:
            text = _plain(scalar)
            if text is None and as_key:
                text = _one_line(pyyaml_dump({scalar: None}), "", ": null\n")
            elif text is None:
                text = _one_line(pyyaml_dump([scalar]), "- ", "\n")
            if text is None or (as_key and (len(text) > LONGEST_SIMPLE_KEY or text[0] == "?")):
                text = ""
            self._remember(cache, cache_key, text)
        if not text:
            raise _NotSimple
        return text

    def _remember(self, cache: dict[Any, str], key: Any, text: str) -> None:
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[key] = text


def _cache_key(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return value
    if kind not in _SCALAR_TYPES:
        raise _NotSimple
    return (kind, repr(value) if kind is float else value)


def _plain(value: Any) -> str | None:
    """PyYAML's text for the commonest scalars, without asking PyYAML's writer."""
    kind = type(value)
    if kind is str:
        if len(value) > LONGEST_SIMPLE_KEY or not _PLAIN.fullmatch(value) or value == "...":
            return None
        if _RESOLVER.resolve(ScalarNode, value, (True, False)) == _STR_TAG:  # type: ignore[no-untyped-call]
            return str(value)
        return f"'{value}'"  # reads as a number, boolean, null or date: quoted
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return None


def _one_line(text: str, prefix: str, suffix: str) -> str | None:
    """The scalar between `prefix` and `suffix` of PyYAML's text, if it fits on one line."""
    if not (text.startswith(prefix) and text.endswith(suffix)):
        return None
    inner = text[len(prefix) : len(text) - len(suffix)]
    return inner if inner and "\n" not in inner else None
