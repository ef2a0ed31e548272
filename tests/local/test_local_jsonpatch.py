"""Applying a webhook's JSON patch as the local API server does: the patches the injector
really produces (`sidemesh.inject.patch.create_patch`) and the RFC's own examples apply; a bad
patch changes nothing and the error names the operation that failed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidemesh.inject.patch import create_patch
from sidemesh.local.jsonpatch import PatchError, apply_patch

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet="ab/~c", max_size=3), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON, JSON)
def test_applying_our_diff_reaches_the_target(old: Any, new: Any) -> None:
    assert apply_patch(old, create_patch(old, new)) == new


@pytest.mark.parametrize(
    ("document", "patch", "expected"),
    [
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"foo": "bar", "baz": "qux"},
        ),
        (
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
        ),
        ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": "x"}], {"foo": ["bar", "x"]}),
        ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
        (
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
        ),
        ({"baz": "qux"}, [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo"}),
        (
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        ),
        (
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
        ),
        ({"a": 1}, [{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1, "b": 1}),
        (
            {"a/b": 1, "m~n": 2},
            [{"op": "remove", "path": "/a~1b"}, {"op": "replace", "path": "/m~0n", "value": 3}],
            {"m~n": 3},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
    ],
)
def test_rfc6902_examples(document: Any, patch: list[dict[str, Any]], expected: Any) -> None:
    assert apply_patch(document, patch) == expected


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ([{"op": "remove", "path": "/missing"}], r"operation 0 \(remove /missing\): .*existent"),
        ([{"op": "replace", "path": "/missing", "value": 1}], r"operation 0 \(replace /missing\)"),
        ([{"op": "add", "path": "/list/5", "value": 1}], r"operation 0 \(add /list/5\): .*list"),
        ([{"op": "add", "path": "/list/01", "value": 1}], "'01' is not a valid sequence index"),
        ([{"op": "test", "path": "/a", "value": 2}], "not equal to tested value 2"),
        ([{"op": "frobnicate", "path": "/a"}], "Unknown operation 'frobnicate'"),
        ([{"op": "add", "path": "a", "value": 1}], "must start with /"),
        ([{"op": "add", "path": "/a"}], "does not contain a 'value'"),
        ([{"op": "add", "path": "/x/y", "value": 1}], r"operation 0 \(add /x/y\): .*'x' not found"),
        (
            [{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/nope"}],
            r"operation 1 \(remove /nope\)",  # all or nothing: the first one is undone too
        ),
        ([1], "operation 0: Operation must be an object"),
        ({"op": "add"}, "a JSON patch is a list of operations, not dict"),
    ],
)
def test_bad_patches_fail_clearly_without_touching_the_document(patch: Any, message: str) -> None:
    document = {"a": 1, "list": [0]}
    with pytest.raises(PatchError, match=message):
        apply_patch(document, patch)
    assert document == {"a": 1, "list": [0]}
