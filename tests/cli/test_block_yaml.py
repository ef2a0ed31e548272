"""The manifest writer's law: `BlockWriter().dump(x) == yaml.dump(x, CSafeDumper, ...)` for
every document, byte for byte, whatever the scalars (the layout is written by hand, scalars
that could depend on their column go to PyYAML)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidemesh.api.block_yaml import BlockWriter, pyyaml_dump

# Characters that change how PyYAML writes a scalar: indicators, quotes, spaces, breaks,
# non-ASCII, and what makes a string read as another type.
TRICKY = st.sampled_from(
    ["", " ", "a", "Z", "0", "1", ".", "-", ":", "#", "'", '"', "\n", "\t", "é", "日", "\x85",
     "yes", "no", "null", "~", "true", "0x1F", "1e3", "2026-12-04", "<<", "=", "---", "...",
     "!", "&", "*", "[", "{", ",", "?", "%", "@", "`", "|", ">"]
)  # fmt: skip
STRINGS = st.lists(TRICKY, max_size=12).map("".join) | st.text(max_size=20)
LONG = st.builds(
    lambda word, n: " ".join([word] * n), st.sampled_from(["ab", "x-y"]), st.integers(1, 40)
)
SCALARS = (
    STRINGS
    | LONG
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.none()
)
KEYS = STRINGS | st.integers(-5, 5) | st.booleans() | st.none()
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(DOCUMENTS)
def test_writes_what_pyyaml_writes(document: Any) -> None:
    writer = BlockWriter()
    assert writer.dump(document) == pyyaml_dump(document)
    assert writer.dump(document, unshared=True) == pyyaml_dump(document)  # remembered items


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(DOCUMENTS, min_size=2, max_size=6))
def test_what_it_remembers_never_changes_the_text(documents: list[Any]) -> None:
    writer = BlockWriter(cache_size=16)  # small: entries are evicted too
    for document in documents * 2:
        assert writer.dump([{"spec": [document]}], unshared=True) == pyyaml_dump(
            [{"spec": [document]}]
        )


def test_an_object_met_twice_is_an_anchor_as_in_pyyaml() -> None:
    shared = {"name": "x"}
    document = {"a": [shared, shared], "b": shared}
    assert BlockWriter().dump(document) == pyyaml_dump(document)
    assert "&id001" in BlockWriter().dump(document)


def test_a_long_value_is_folded_where_pyyaml_folds_it() -> None:
    for indent in range(0, 30, 2):
        document: Any = "word " * 30
        for _ in range(indent // 2):
            document = {"key": document}
        assert BlockWriter().dump(document) == pyyaml_dump(document)
