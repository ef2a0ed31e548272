"""The one reader of manifests (`-f FILE|DIR|-`) for every command: files, directories and
standard input, read as they arrive, with every error in one line naming the file (and line).

`documents()` gives whole documents (what `local apply` and `check-inject` need);
`pieces()` gives a document that is a mapping one top-level field at a time and the items of
its `items:` list one at a time, so a List of any size is never held in memory
(`kube-inject`). Both read libyaml's events (C), with the same errors. Whole documents are
composed and constructed by PyYAML's own safe composer and constructor; pieces are built
straight from the events (the hot path), with the same results, and what that builder does
not do (anchors, aliases, tags, merge keys) sends the document back to be read whole.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml
from yaml.composer import Composer
from yaml.events import (
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import Node, ScalarNode

STDIN = "-"
SUFFIXES = (".yaml", ".yml", ".json")
STREAMED_KEY = "items"  # the list `pieces()` hands out one item at a time
_MAP_TAG = "tag:yaml.org,2002:map"
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_PLAIN_CACHE = 4096
_UNSEEN = object()


class ManifestError(ValueError):
    """A manifest cannot be read; str() is one line naming the file and, when known, the line."""


class NotStreamable(Exception):
    """Document `index` uses anchors, aliases, tags or merge keys across its top-level fields
    or items; read it whole (`pieces(..., whole={index})`)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"document {index} must be read whole")
        self.index = index


def label(name: str) -> str:
    return "<stdin>" if name == STDIN else name


def expand(names: Iterable[str]) -> list[str]:
    """The files to read: a directory means its YAML and JSON files (sorted), `-` stdin.
    An empty directory adds nothing (`read_all` then says there is no object, as kubectl)."""
    found: list[str] = []
    for name in names:
        path = Path(name)
        if name != STDIN and path.is_dir():
            found += sorted(str(p) for p in path.iterdir() if p.suffix in SUFFIXES)
        else:
            found.append(name)
    return found


@contextlib.contextmanager
def open_text(name: str) -> Iterator[IO[str]]:
    """The manifest as strict UTF-8 text, read as it is consumed (stdin too, as bytes)."""
    if name == STDIN:
        stream = io.TextIOWrapper(_stdin_bytes(), encoding="utf-8", errors="strict")
        try:
            yield stream
        finally:
            stream.detach()  # leave the process's stdin open
        return
    try:
        handle = open(name, encoding="utf-8", errors="strict")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise ManifestError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        yield handle


def _stdin_bytes() -> IO[bytes]:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return buffer  # type: ignore[no-any-return]
    return io.BytesIO(sys.stdin.read().encode("utf-8", "surrogateescape"))


# --- what pieces() yields --------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentStart:
    index: int  # 1-based, counting documents that are not empty


@dataclass(frozen=True)
class Whole:
    value: Any  # the whole document


@dataclass(frozen=True)
class Field:
    key: Any
    value: Any  # one top-level field of a mapping document


@dataclass(frozen=True)
class ItemsStart:
    key: Any  # the top-level `items:` list begins; Item pieces follow until ItemsEnd


@dataclass(frozen=True)
class Item:
    value: Any


@dataclass(frozen=True)
class ItemsEnd:
    pass


@dataclass(frozen=True)
class DocumentEnd:
    pass


Piece = DocumentStart | Whole | Field | ItemsStart | Item | ItemsEnd | DocumentEnd


class _Loader(yaml.CSafeLoader, Composer):
    """libyaml's parser (C) with PyYAML's composer, so a document can be composed a node at a
    time (the C composer only composes whole documents)."""

    def __init__(self, stream: IO[str]) -> None:
        yaml.CSafeLoader.__init__(self, stream)
        Composer.__init__(self)

    def node(self) -> Node:
        """The next node (with its children), composed."""
        node = self.compose_node(None, None)  # type: ignore[arg-type]
        assert node is not None  # the parser gave an event that starts a node
        return node

    def construct_node(self, node: Node) -> Any:
        return self.construct_document(node)


class _Reader:
    def __init__(
        self, name: str, stream: IO[str], whole: Container[int], shown: str | None = None
    ) -> None:
        self.name = name
        self.label = shown or label(name)
        self.loader = _Loader(stream)
        self.whole = whole  # documents (by number) to give as one Whole piece
        self.index = 0  # documents read that are not empty
        self.current = 1  # the document being read, as errors name it
        self.plain: dict[str, Any] = {}

    def pieces(self, skip_before: int) -> Iterator[Piece]:
        loader = self.loader
        with self._errors():
            loader.get_event()  # StreamStart
            while not loader.check_event(StreamEndEvent):
                self.current = self.index + 1
                loader.get_event()  # DocumentStart
                start = loader.peek_event()
                if _is_empty(start):
                    loader.get_event()
                    loader.get_event()  # DocumentEnd
                    continue
                self.index += 1
                if self.index < skip_before:  # given before a NotStreamable restart
                    loader.node()
                    loader.get_event()  # DocumentEnd
                    loader.anchors = {}
                    continue
                yield DocumentStart(self.index)
                if self.index in self.whole or not _streamable_root(start):
                    yield Whole(loader.construct_node(loader.node()))
                else:
                    yield from self._mapping()
                loader.get_event()  # DocumentEnd
                loader.anchors = {}
                yield DocumentEnd()

    def _mapping(self) -> Iterator[Piece]:
        get_event = self.loader.get_event
        get_event()  # MappingStart
        keys: set[Any] = set()
        while type(event := get_event()) is not MappingEndEvent:
            key = self._build(event)
            if key in keys:  # the later value wins, in the first one's place: read it whole
                self._not_streamable()
            keys.add(key)
            event = get_event()
            if key != STREAMED_KEY or type(event) is not SequenceStartEvent:
                yield Field(key, self._build(event))
                continue
            if event.anchor is not None or event.tag is not None:
                self._not_streamable()
            yield ItemsStart(key)
            while type(event := get_event()) is not SequenceEndEvent:
                yield Item(self._build(event))
            yield ItemsEnd()

    def _build(self, event: Any) -> Any:
        """The node `event` starts, as `yaml.safe_load` constructs it, straight from libyaml's
        events (one call per event: this is the hot path). What needs the whole document
        (anchors, aliases, tags, merge keys, keys that are collections) raises NotStreamable."""
        kind = type(event)
        if event.anchor is not None or event.tag is not None:
            self._not_streamable()  # (an AliasEvent has an anchor, hence no tag is read)
        if kind is ScalarEvent:
            if not event.implicit[0]:  # quoted, or a block scalar: a string
                return event.value
            value = self.plain.get(event.value, _UNSEEN)
            return self._plain(event.value) if value is _UNSEEN else value
        get_event = self.loader.get_event
        if kind is MappingStartEvent:
            mapping: dict[Any, Any] = {}
            while type(event := get_event()) is not MappingEndEvent:
                key = self._build(event)
                if type(key) in (dict, list):  # unhashable: the whole reading says so
                    self._not_streamable()
                mapping[key] = self._build(get_event())
            return mapping
        if kind is SequenceStartEvent:
            sequence: list[Any] = []
            while type(event := get_event()) is not SequenceEndEvent:
                sequence.append(self._build(event))
            return sequence
        self._not_streamable()

    def _plain(self, text: str) -> Any:
        """A plain scalar: its type by PyYAML's implicit resolvers (remembered; all immutable)."""
        tag = self.loader.resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        if tag not in _PLAIN_TAGS:
            self._not_streamable()  # `<<` (merge) or `=` (value)
        value = self.loader.construct_document(ScalarNode(tag, text))
        if len(self.plain) >= _PLAIN_CACHE:
            self.plain.clear()
        self.plain[text] = value
        return value

    def _not_streamable(self) -> NoReturn:
        raise NotStreamable(self.index)

    def _where(self, offset: int) -> str:
        line = None if self.name == STDIN else _line_at(self.name, offset)
        return self.label if line is None else f"{self.label}:{line}"

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{self.label}: not UTF-8 text: {exc.reason}") from exc
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{self.label}:{mark.line + 1}" if mark is not None else self.label
            problem = _one_line(exc.problem or exc.context or type(exc).__name__)
            raise ManifestError(
                f"{where}: YAML document {self.current} cannot be read: {problem}"
            ) from exc
        except yaml.reader.ReaderError as exc:
            raise ManifestError(
                f"{self._where(exc.position)}: not YAML text: {exc.reason} "
                f"(character #x{_code(exc.character):04x})"
            ) from exc
        except yaml.YAMLError as exc:
            raise ManifestError(f"{self.label}: cannot be read: {_one_line(str(exc))}") from exc


def _line_at(path: str, offset: int) -> int | None:
    """The line of a byte offset in a file (libyaml's reader errors give only the offset)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(offset).count(b"\n") + 1
    except OSError:
        return None


def _is_empty(event: Any) -> bool:
    return (
        isinstance(event, yaml.ScalarEvent)
        and event.value == ""
        and event.implicit[0]
        and event.tag is None
        and event.anchor is None
    )


def _streamable_root(event: Any) -> bool:
    return (
        isinstance(event, MappingStartEvent)
        and event.anchor is None
        and event.tag in (None, _MAP_TAG)
    )


def _code(character: Any) -> int:
    if isinstance(character, int):
        return character
    return ord(character) if isinstance(character, str) and character else 0


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", "; ", text.strip())


def pieces(
    name: str,
    *,
    label: str | None = None,
    whole: frozenset[int] = frozenset(),
    skip_before: int = 0,
) -> Iterator[Piece]:
    """The documents of one manifest, a top-level field or list item at a time (see module).

    Documents numbered in `whole` come as one Whole piece; documents before `skip_before` are
    parsed but not given. Raises ManifestError, and NotStreamable for a document that must be
    read whole. `label` names the input in errors (default: the file name, or <stdin>)."""
    with open_text(name) as stream:
        yield from _Reader(name, stream, whole, label).pieces(skip_before)


def documents(name: str) -> Iterator[Any]:
    """Every document of one manifest that is not empty, whole, read as consumed.
    Raises ManifestError."""
    with open_text(name) as stream:
        reader = _Reader(name, stream, _ALL)
        for piece in reader.pieces(0):
            if isinstance(piece, Whole):
                yield piece.value


class _Every:
    def __contains__(self, index: object) -> bool:
        return True


_ALL = _Every()


def read_all(names: Iterable[str], *, verb: str) -> list[tuple[str, list[Any]]]:
    """(file, its documents) for every file (directories expanded), every document parsed
    before any is returned, so a caller can refuse them all before acting on one.
    Raises ManifestError, also when there is no object at all (kubectl's words, with `verb`)."""
    loaded = [(label(name), list(documents(name))) for name in expand(names)]
    if not any(found for _, found in loaded):
        raise ManifestError(f"no objects passed to {verb}")
    return loaded


__all__ = [
    "DocumentEnd",
    "DocumentStart",
    "Field",
    "Item",
    "ItemsEnd",
    "ItemsStart",
    "ManifestError",
    "NotStreamable",
    "Piece",
    "Whole",
    "documents",
    "expand",
    "label",
    "open_text",
    "pieces",
    "read_all",
]
