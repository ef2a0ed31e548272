"""Comparing sidemesh's template YAML loader with the reference it must equal:
`yaml.load(text, Loader=yaml.CSafeLoader)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from sidemesh.inject import yaml_subset

Outcome = tuple[str, Any]
OUTSIDE: Outcome = ("outside the subset", None)


def reference(text: str) -> Any:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def outcome(load: Callable[[str], Any], text: str) -> Outcome:
    """A value as its repr (which tells 1, 1.0 and True apart, and keys' order), or an error as
    its type."""
    try:
        return ("value", repr(load(text)))
    except yaml_subset.OutsideSubset:
        return OUTSIDE
    except Exception as exc:  # the reference's errors are compared by type
        return ("error", type(exc))


def check_same_as_reference(text: str) -> Outcome:
    """`load` gives what the reference gives, and the fast path either gives it too or refuses
    the text; returns the fast path's outcome."""
    expected = outcome(reference, text)
    assert expected != OUTSIDE
    fast = outcome(yaml_subset.parse_subset, text)
    assert fast in (OUTSIDE, expected), f"fast path {fast} != reference {expected} for\n{text}"
    assert outcome(yaml_subset.load, text) == expected
    return fast
