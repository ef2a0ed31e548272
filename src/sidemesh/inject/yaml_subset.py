"""Loading rendered templates: a strict parser for the plain YAML they use, PyYAML for the rest.

`yaml.load(text, Loader=yaml.CSafeLoader)` is most of a cold admission (~1 ms for the default
template), nearly all of it PyYAML building event and node objects. Templates use a small part
of YAML: block mappings and sequences, one-line flow collections (much of it JSON from
`| tojson`), plain and quoted one-line scalars, comments. `parse_subset` reads exactly that
part and refuses everything else (anchors, aliases, tags, merge keys, block and multi-line
scalars, complex keys, document markers, tabs, non-ASCII, anything it is unsure of), and
`load` then hands the whole text to PyYAML, so results, errors included, are PyYAML's.

Scalars keep YAML 1.1 meaning because they are not interpreted here: plain scalars go through
CSafeLoader's own resolver and SafeConstructor (`yes` is True, `0755` is 493, `1e5` a string),
quoted scalars are strings. The differential tests (tests/inject/test_yaml_subset_*.py) hold
the two paths equal.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

__all__ = ["OutsideSubset", "load", "parse_subset"]


class OutsideSubset(Exception):
    """The text uses YAML this parser does not read; PyYAML must load it."""


# The subset is printable ASCII and newlines: no tabs, carriage returns, BOMs, Unicode breaks.
_CONTROL_CHARACTERS = bytes([*range(0x0A), *range(0x0B, 0x20), 0x7F])
# First character of a plain scalar: no indicator, and `-` only before a character that
# cannot make it an indicator (`?` and `:` starts, legal but rare, are left to PyYAML).
_PLAIN_START = r"(?:[^\s\-?:,\[\]{}#&*!|>'\"%@`]|-[^\s:,\[\]{}#])"
_PLAIN_FIRST = re.compile(_PLAIN_START)
# Every line: (indent, "- " of a sequence entry, mapping key up to its `:`, the rest). Plain
# keys may not contain `:` or `#` (the rare key that does goes to PyYAML). Keys keep trailing
# spaces, quoted ones their quotes.
_LINE = re.compile(
    r"^( *)(-(?: +|$))?"
    rf"(?:({_PLAIN_START}[^\n:#]*|\"(?:[^\n\"\\]|\\.)*\" *|'(?:[^\n']|'')*' *):(?: +|$))?"
    r"(.*)$",
    re.MULTILINE,
)
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SINGLE_QUOTED = re.compile(r"'((?:[^']|'')*)'")
# What may follow a value on its line: spaces, and a comment after at least one.
_LINE_END = re.compile(r"(?: +(?:#.*)?)?$")
# The tokens of a one-line flow collection, each with the spaces after it.
_FLOW_TOKEN = re.compile(
    r"[\[\]{},:] *"
    r"|\"(?:[^\"\\]|\\.)*\" *"
    r"|'(?:[^']|'')*' *"
    rf"|{_PLAIN_START}[^:#,\[\]{{}}]*"
    r"|#.*"
)
# libyaml refuses surrogate escapes, even paired; JSON decodes them.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# libyaml forgets a possible simple key 1024 characters after its start; stay inside that.
_LONGEST_KEY = 1000
_CORE_TAGS = frozenset(
    "tag:yaml.org,2002:" + name for name in ("str", "null", "bool", "int", "float", "timestamp")
)
_PLAIN_CACHE_SIZE = 4096
_plain_cache: dict[str, Any] = {}
_reference_loader: yaml.CSafeLoader | None = None


def load(text: str) -> Any:
    """Exactly `yaml.load(text, Loader=yaml.CSafeLoader)`, faster for the subset templates use."""
    try:
        return parse_subset(text)
    except (OutsideSubset, RecursionError):  # PyYAML nests deeper than this parser
        return yaml.load(text, Loader=yaml.CSafeLoader)


def parse_subset(text: str) -> Any:
    """Parse `text` if it is inside the subset; raise OutsideSubset if it is not."""
    if not text.isascii() or len(text.encode().translate(None, _CONTROL_CHARACTERS)) != len(text):
        raise OutsideSubset("characters outside printable ASCII")
    if text.startswith(("---", "...")) or "\n---" in text or "\n..." in text:
        raise OutsideSubset("document markers")
    entries = [
        (len(indent), dash, key, rest)
        for indent, dash, key, rest in _LINE.findall(text)
        if key or dash or (rest and rest[0] != "#")
    ]
    if not entries:
        return None
    parser = _BlockParser(entries)
    value = parser.root()
    if parser.position != len(entries):
        raise OutsideSubset(f"unexpected indentation at entry {parser.position + 1}")
    return value


class _BlockParser:
    """Block structure over the entries of the lines: (indent, dash, key, rest).

    A container method is called with its first entry consumed and returns at an entry less
    indented than itself; an entry indented more than a finished one is refused (it would
    continue a multi-line scalar, or be an error).
    """

    def __init__(self, entries: list[tuple[int, str, str, str]]) -> None:
        self.entries = entries
        self.position = 1

    def root(self) -> Any:
        indent, dash, key, rest = self.entries[0]
        if dash:
            return self.sequence(indent, dash, key, rest, indentless=False)
        if key:
            return self.mapping(indent, key, rest)
        raise OutsideSubset("a scalar or flow document")

    def mapping(self, indent: int, key: str, rest: str) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        entries = self.entries
        while True:
            if len(key) > _LONGEST_KEY:
                raise OutsideSubset("long mapping key")
            key = key.rstrip(" ")
            if key[0] == '"':
                constructed = _double_quoted(key[1:-1])
            elif key[0] == "'":
                constructed = key[1:-1].replace("''", "'")
            else:
                constructed = _plain_scalar(key)
            if rest and rest[0] != "#":
                result[constructed] = _inline_value(rest)
            else:
                result[constructed] = self.nested(indent, indentless_sequence=True)
            if self.position == len(entries):
                return result
            next_indent, dash, key, rest = entries[self.position]
            if next_indent < indent:
                return result
            if next_indent > indent or dash or not key:
                raise OutsideSubset("mapping entry expected")
            self.position += 1

    def sequence(
        self, indent: int, dash: str, key: str, rest: str, *, indentless: bool
    ) -> list[Any]:
        """An indentless sequence (a mapping value at the mapping's own indent) ends at the
        first line that is not an entry; any other sequence must end less indented."""
        result: list[Any] = []
        entries = self.entries
        while True:
            if key:  # `- key: value` starts a mapping at the key's column
                result.append(self.mapping(indent + len(dash), key, rest))
            elif rest and rest[0] != "#":
                result.append(_inline_value(rest))
            else:
                result.append(self.nested(indent, indentless_sequence=False))
            if self.position == len(entries):
                return result
            next_indent, dash, key, rest = entries[self.position]
            if next_indent < indent:
                return result
            if next_indent > indent:
                raise OutsideSubset("sequence entry expected")
            if not dash:
                if indentless:
                    return result
                raise OutsideSubset("sequence entry expected")
            self.position += 1

    def nested(self, indent: int, *, indentless_sequence: bool) -> Any:
        """The block under an entry with no value on its line, or null if there is none."""
        if self.position < len(self.entries):
            next_indent, dash, key, rest = self.entries[self.position]
            if next_indent > indent or (next_indent == indent and indentless_sequence and dash):
                self.position += 1
                if dash:
                    return self.sequence(
                        next_indent, dash, key, rest, indentless=next_indent == indent
                    )
                if key:
                    return self.mapping(next_indent, key, rest)
                raise OutsideSubset("a scalar on its own line")
        return _plain_scalar("")


def _inline_value(text: str) -> Any:
    """A value on the rest of a block line: a scalar or a one-line flow collection."""
    first = text[0]
    if first == '"':
        match = _DOUBLE_QUOTED.match(text)
        if match is None or not _LINE_END.match(text, match.end()):
            raise OutsideSubset("double-quoted scalar")
        return _double_quoted(match[1])
    if first == "'":
        match = _SINGLE_QUOTED.match(text)
        if match is None or not _LINE_END.match(text, match.end()):
            raise OutsideSubset("single-quoted scalar")
        return match[1].replace("''", "'")
    if first == "[" or first == "{":
        return _flow_value(text.rstrip(" "))
    if not _PLAIN_FIRST.match(text):
        raise OutsideSubset(f"value starts with {first!r}")
    comment = text.find(" #")
    text = text[:comment] if comment >= 0 else text
    text = text.rstrip(" ")
    if ": " in text or text[-1] == ":":
        raise OutsideSubset("':' in a plain scalar")
    return _plain_scalar(text)


def _flow_value(text: str) -> Any:
    if text[1:2] == '"' and len(text) <= _LONGEST_KEY and not _SURROGATE_ESCAPE.search(text):
        # `| tojson` output is JSON; its numbers and NaN/Infinity go through the YAML resolver.
        try:
            return _JSON.decode(text)
        except ValueError:
            pass
    tokens = _FLOW_TOKEN.findall(text)
    if sum(map(len, tokens)) != len(text):
        raise OutsideSubset("flow collection")
    try:
        value, end = _flow_collection(tokens, 0)
    except IndexError:
        raise OutsideSubset("unclosed flow collection") from None
    if end < len(tokens) and not (
        end == len(tokens) - 1 and tokens[end][0] == "#" and tokens[end - 1][-1] == " "
    ):
        raise OutsideSubset("text after a flow collection")
    return value


def _flow_collection(tokens: list[str], index: int) -> tuple[Any, int]:
    """The collection opening at tokens[index]; returns it and the index after its end."""
    is_sequence = tokens[index][0] == "["
    closing = "]" if is_sequence else "}"
    items: list[Any] = []
    mapping: dict[Any, Any] = {}
    index += 1
    if tokens[index][0] != closing:
        while True:
            if is_sequence:
                item, index = _flow_node(tokens, index)
                items.append(item)
            else:
                key, colon = tokens[index], tokens[index + 1]
                if colon[0] != ":" or len(key) > _LONGEST_KEY:
                    raise OutsideSubset("flow mapping key")
                if colon == ":" and key[0] != '"' and key[0] != "'":  # `a:b` is one scalar
                    raise OutsideSubset("plain key without a space after ':'")
                mapping[_flow_scalar(key)], index = _flow_node(tokens, index + 2)
            separator = tokens[index][0]
            if separator == closing:
                break
            if separator != ",":
                raise OutsideSubset(f"{separator!r} in a flow collection")
            index += 1
    return (items if is_sequence else mapping), index + 1


def _flow_node(tokens: list[str], index: int) -> tuple[Any, int]:
    token = tokens[index]
    if token[0] == "[" or token[0] == "{":
        return _flow_collection(tokens, index)
    return _flow_scalar(token), index + 1


def _flow_scalar(token: str) -> Any:
    first = token[0]
    if first == '"':
        return _double_quoted(token.rstrip(" ")[1:-1])
    if first == "'":
        return token.rstrip(" ")[1:-1].replace("''", "'")
    if first in ",:[]{}#":
        raise OutsideSubset(f"flow scalar expected, found {first!r}")
    return _plain_scalar(token.rstrip(" "))


def _double_quoted(body: str) -> str:
    if "\\" not in body:
        return body
    if _SURROGATE_ESCAPE.search(body):
        raise OutsideSubset("surrogate escape")
    try:
        # JSON's escapes are a subset of YAML's with the same meaning.
        decoded: str = json.loads(f'"{body}"')
    except ValueError:
        raise OutsideSubset("escape JSON does not have") from None
    return decoded


def _plain_scalar(text: str) -> Any:
    """A plain scalar as CSafeLoader constructs it (YAML 1.1 implicit types), memoised."""
    try:
        return _plain_cache[text]
    except KeyError:
        pass
    global _reference_loader
    if _reference_loader is None:
        _reference_loader = yaml.CSafeLoader("")
    loader = _reference_loader
    tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
    if tag not in _CORE_TAGS:  # merge keys `<<`, value `=`, or a custom implicit type
        raise OutsideSubset(f"plain scalar {text!r} resolves to {tag}")
    try:
        value = loader.yaml_constructors[tag](loader, yaml.ScalarNode(tag, text))
    except Exception as exc:  # `2001-02-30`: PyYAML must report it, in its own order
        raise OutsideSubset(f"plain scalar {text!r}: {exc}") from None
    if len(_plain_cache) >= _PLAIN_CACHE_SIZE:
        _plain_cache.clear()
    _plain_cache[text] = value
    return value


_JSON = json.JSONDecoder(
    parse_float=_plain_scalar, parse_int=_plain_scalar, parse_constant=_plain_scalar
)
