"""The template YAML loader against PyYAML on generated documents.

Ordinary documents: block and flow mappings and sequences in every layout (indentless and
compact sequences included), plain scalars of every YAML 1.1 type, quoted scalars with
escapes, JSON as `| tojson` writes it, comments and blank lines anywhere. Exotic documents:
an ordinary one with one or two parts replaced by something the fast path must leave to
PyYAML (anchors, aliases, merge keys, tags, block and multi-line scalars, complex keys,
document markers, tabs, near-misses like `a: b: c`). Damaged documents: either kind with
characters inserted or deleted. In all of them, the fast path gives PyYAML's value or refuses
the text, and `load` gives PyYAML's value or error.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from yaml_subset_support import OUTSIDE, check_same_as_reference

GENERATED = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

# YAML 1.1 values the fast path reads, each resolved by PyYAML's rules.
TYPED_SCALARS = [
    *("yes", "No", "on", "OFF", "y", "n", "true", "False", "~", "null", "NULL"),
    *("0755", "0o17", "0x1F", "0b11", "1_000", "190:20:30", "1e5", "1.5e+3", "1.5e3", "3."),
    *(".5", ".inf", "-.Inf", ".NaN", "+5", "-0", "-1", "12345678901234567890", "2001-12-14"),
    *("2001-12-14t21:59:43.10-05:00", "--x", "a:b", "a :b", "a#b", "it's", 'say "hi"', "a,b"),
    *("http://x/y", "back\\slash", "k" * 999),
]
plain_text = st.text(alphabet="abAZ01 ._/-", min_size=1, max_size=8).map(str.strip).filter(bool)

# Values the fast path must refuse: PyYAML reads them differently, or fails on them.
EXOTIC_VALUES = [
    *("2001-02-30", "<<", "=", "-", "a: b", "a:", "?x", ":x", "%x", "@x", "`x", "!x", "&x"),
    *("*x", "|", ">", "'", '"', "x]", "é", "tab\tx", "cr\rx", "k" * 1100, "--- x", "... x"),
    *('"\\x41\\e"', '"\\ud83d\\ude00"', '"\\q"', '"é"', "'x'#c", '"x"y', "[x] y", "- x"),
    *("[1, 2, ]", "{k:1}", "[a: 1]", "{a: , b: 1}", "[a #c]", "[1,,2]", '["\\ud83d"]'),
    *("{<<: {x: 1}}", "[*x]", "{a: !!str 1}", "[-]", "{? a: 1}", "[{k:1}]", "{a: b: c}"),
    *("|\n  text", ">-\n  one\n  two", "one\n  two", '"one\n  two"', "[1,\n  2]"),
    *("&b {x: 1}", "*b", "!!binary aGk=", "!!int '3'", "!x y", "&a [1]"),
]
EXOTIC_KEYS = ["<<", "? x", "[k]", "{k: 1}", "&a k", "*a", "!!str k", "k" * 1001, "a #b"]
EXOTIC_LINES = ["---", "...", "%YAML 1.1", "<<: *b", "\tk: v", "k: v\r", "? k", ": v", "!x"]


def double_quoted(text: str) -> st.SearchStrategy[str]:
    """JSON's quoting, some escapes written the way YAML allows too."""
    plain = json.dumps(text)
    return st.sampled_from([plain, plain.replace("/", "\\/"), json.dumps(text + "\u00e9\n\t")])


@st.composite
def scalars(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TYPED_SCALARS) | plain_text)
    style = draw(st.sampled_from(["plain", "plain", "double", "single"]))
    if style == "double":
        return draw(double_quoted(text))
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    return text


def flow_nodes() -> st.SearchStrategy[str]:
    def collections(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        separators = st.sampled_from([", ", ",", " , ", ",  "])
        entries = st.tuples(scalars(), st.sampled_from([": ", ":  ", " : "]), children)
        return st.builds(
            lambda items, sep: "[" + sep.join(items) + "]",
            st.lists(children, max_size=4),
            separators,
        ) | st.builds(
            lambda items, sep: "{" + sep.join(map("".join, items)) + "}",
            st.lists(entries, max_size=4),
            separators,
        )

    # As `| tojson` writes it. 1e+16 and 1e-05 are floats to JSON, strings to YAML 1.1; lone
    # surrogates, which st.text makes, are escaped by json.dumps and refused by YAML.
    text = st.text(max_size=6)
    leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from([1e16, 1e-5])

    def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3)

    json_values = st.recursive(leaves | text, containers, max_leaves=6)
    return st.recursive(scalars(), collections, max_leaves=8) | json_values.map(json.dumps)


@st.composite
def blocks(draw: st.DrawFn, depth: int = 0) -> list[str]:
    """Lines of a block mapping or sequence at column 0; the caller indents them."""
    width = draw(st.sampled_from([1, 2, 2, 4]))
    lines: list[str] = []
    if draw(st.booleans()):
        for _ in range(draw(st.integers(1, 4))):
            head = draw(scalars()) + draw(st.sampled_from([":", ":", " :"]))
            lines += entry(draw, head, depth, width, under_key=True)
    else:
        for _ in range(draw(st.integers(1, 4))):
            head = draw(st.sampled_from(["-", "-", "-  "]))
            lines += entry(draw, head, depth, width, under_key=False)
    return lines


def entry(draw: st.DrawFn, head: str, depth: int, width: int, *, under_key: bool) -> list[str]:
    kind = draw(st.sampled_from(["scalar", "flow", "block", "block", "empty", "comment"]))
    if kind == "block" and depth < 3:
        inner = draw(blocks(depth + 1))
        if not under_key and inner[0][0] not in "- #" and draw(st.booleans()):
            # compact: `- key: value`, the rest of the mapping at the key's column
            pad = " " * (len(head) - 1 or 1)
            return [f"-{pad}{inner[0]}", *[" " * (1 + len(pad)) + line for line in inner[1:]]]
        indentless = under_key and inner[0].startswith("-") and draw(st.booleans())
        indent = "" if indentless else " " * width
        return [head.rstrip(), *[indent + line for line in inner]]
    head = head.rstrip()
    if kind == "flow":
        return [f"{head} {draw(flow_nodes())}"]
    if kind == "empty":
        return [head]
    value = draw(scalars())
    if kind == "comment":
        return [f"{head} {value} {draw(st.sampled_from(['# c', '#c:', '# - x']))}"]
    return [f"{head} {value}"]


def assemble(draw: st.DrawFn, lines: list[str]) -> str:
    """Blank and comment lines anywhere, at any indentation, and some ending."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, " " * draw(st.integers(0, 6)) + draw(st.sampled_from(["", "# note"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n", "   \n"]))


@st.composite
def documents(draw: st.DrawFn) -> str:
    return assemble(draw, draw(blocks()))


@st.composite
def exotic_documents(draw: st.DrawFn) -> str:
    lines = draw(blocks())
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        indent = line[: len(line) - len(line.lstrip(" "))]
        head, colon, _ = line.partition(": ")
        if not colon and line.rstrip().endswith(":"):
            head, colon = line.rstrip()[:-1], ": "
        if not colon:
            head = indent + "-" if line.lstrip().startswith("-") else ""
            colon = " " if head else ""
        part = draw(st.sampled_from(["value", "value", "key", "line"]))
        if part == "value" and head:
            lines[at] = head + colon + draw(st.sampled_from(EXOTIC_VALUES))
        elif part == "key" and ":" in colon:
            lines[at] = indent + draw(st.sampled_from(EXOTIC_KEYS)) + line[len(head) :]
        else:
            lines.insert(at, indent + draw(st.sampled_from(EXOTIC_LINES)))
    return assemble(draw, lines)


@st.composite
def damaged_documents(draw: st.DrawFn) -> str:
    text: str = draw(documents() | exotic_documents())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "indent", "dedent"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(list(" :-#[]{},'\"\n\t&*!|>?"))) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            start = text.rfind("\n", 0, at) + 1
            if edit == "indent":
                text = text[:start] + " " + text[start:]
            elif text.startswith(" ", start):
                text = text[:start] + text[start + 1 :]
    return text


@GENERATED
@given(documents())
def test_generated_documents(text: str) -> None:
    check_same_as_reference(text)


@GENERATED
@given(exotic_documents())
def test_exotic_documents(text: str) -> None:
    check_same_as_reference(text)


@GENERATED
@given(damaged_documents())
def test_damaged_documents(text: str) -> None:
    check_same_as_reference(text)


def test_generator_reaches_the_fast_path() -> None:
    """Most ordinary documents must be read by the fast path, or the tests above prove little.

    A threshold on random draws flakes (seeds gave 91 to 124 of 150), so the draws are fixed:
    seed 0 gives 121 of 150. A change to the generator that drops it below the threshold fails
    every run, not one in four."""
    outcomes: list[Any] = []

    @seed(0)
    @settings(max_examples=150, deadline=None, database=None)
    @given(documents())
    def collect(text: str) -> None:
        outcomes.append(check_same_as_reference(text))

    collect()
    inside = [o for o in outcomes if o != OUTSIDE]
    assert len(inside) >= len(outcomes) * 2 // 3, f"{len(inside)}/{len(outcomes)} fast"
