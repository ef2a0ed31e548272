"""`create_patch` on the list and key edge cases, op by op: each row is old -> new -> the exact
RFC 6902 operations, and applying them to old must give new."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from sidemesh.inject.patch import create_patch, encode_patch

A, B, C = {"name": "a"}, {"name": "b"}, {"name": "c"}

# fmt: off
ROWS: list[Any] = [
    pytest.param([B, C], [A, B, C], [{"op": "add", "path": "/0", "value": A}], id="insert-front"),
    pytest.param([A, C], [A, B, C], [{"op": "add", "path": "/1", "value": B}], id="insert-middle"),
    pytest.param([A, B], [A, B, C], [{"op": "add", "path": "/2", "value": C}], id="insert-end"),
    pytest.param(
        [A], [A, B, C],
        [{"op": "add", "path": "/1", "value": B}, {"op": "add", "path": "/2", "value": C}],
        id="insert-two-at-end",
    ),
    pytest.param([], [A], [{"op": "add", "path": "/0", "value": A}], id="insert-into-empty"),
    pytest.param([A, B, C], [B, C], [{"op": "remove", "path": "/0"}], id="remove-front"),
    pytest.param([A, B, C], [A, C], [{"op": "remove", "path": "/1"}], id="remove-middle"),
    pytest.param([A, B, C], [A, B], [{"op": "remove", "path": "/2"}], id="remove-end"),
    pytest.param(
        [A, B, C], [A],
        [{"op": "remove", "path": "/1"}, {"op": "remove", "path": "/1"}],
        id="remove-two",
    ),
    pytest.param([A], [], [{"op": "remove", "path": "/0"}], id="remove-to-empty"),
    pytest.param(
        [A, {"name": "b", "v": 1}, C], [A, {"name": "b", "v": 2}, C],
        [{"op": "replace", "path": "/1/v", "value": 2}],
        id="change-inside-named-item",
    ),
    pytest.param(
        [A, {"name": "b", "v": 1}], [{"name": "b", "v": 2}],
        [{"op": "remove", "path": "/0"}, {"op": "replace", "path": "/0/v", "value": 2}],
        id="remove-front-and-change-the-rest",
    ),
    pytest.param(
        [A, B, C], [A, {"name": "x"}, C],
        [{"op": "replace", "path": "", "value": [A, {"name": "x"}, C]}],
        id="swap-middle-replaces-list",
    ),
    pytest.param(
        [A, B], [B, A], [{"op": "replace", "path": "", "value": [B, A]}], id="reorder-replaces-list"
    ),
    pytest.param([1, 2, 3], [1, 2, 3, 4], [{"op": "add", "path": "/3", "value": 4}], id="scalars"),
    pytest.param([1, 2], [1, True], [{"op": "replace", "path": "", "value": [1, True]}], id="2-to-true"),  # noqa: E501
    pytest.param([[1], [2]], [[1], [2, 3]], [{"op": "replace", "path": "", "value": [[1], [2, 3]]}], id="nested-lists"),  # noqa: E501
    pytest.param(
        {"a/b": 1, "c~d": 2, "e": 3}, {"a/b": 9, "c~d": 2, "f~/": 4},
        [
            {"op": "remove", "path": "/e"},
            {"op": "replace", "path": "/a~1b", "value": 9},
            {"op": "add", "path": "/f~0~1", "value": 4},
        ],
        id="escaped-keys",
    ),
    pytest.param(
        {"m": {"x/y": [A]}}, {"m": {"x/y": [A, B]}},
        [{"op": "add", "path": "/m/x~1y/1", "value": B}],
        id="escaped-key-above-list",
    ),
    pytest.param({"v": {"a": 1}}, {"v": [1]}, [{"op": "replace", "path": "/v", "value": [1]}], id="dict-to-list"),  # noqa: E501
    pytest.param({"v": 1}, {"v": 1.0}, [{"op": "replace", "path": "/v", "value": 1.0}], id="int-to-float"),  # noqa: E501
    pytest.param({"v": None}, {"v": 0}, [{"op": "replace", "path": "/v", "value": 0}], id="null-to-zero"),  # noqa: E501
    pytest.param({"v": [A]}, {"v": [A]}, [], id="equal"),
]
# fmt: on


@pytest.mark.parametrize(("old", "new", "ops"), ROWS)
def test_create_patch(old: Any, new: Any, ops: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(old)
    assert create_patch(old, new) == ops
    assert jsonpatch.apply_patch(old, ops) == new
    assert old == before  # diffing never mutates


def test_shared_subtrees_produce_no_operations() -> None:
    big = {"env": [{"name": f"V{i}", "value": str(i)} for i in range(100)]}
    old = {"spec": big, "status": {}}
    new = {"spec": big, "status": {"phase": "x"}}
    assert create_patch(old, new) == [{"op": "add", "path": "/status/phase", "value": "x"}]


def test_encode_patch_is_json_bytes() -> None:
    assert encode_patch({"a": [1]}, {"a": [1, 2]}) == b'[{"op":"add","path":"/a/1","value":2}]'
