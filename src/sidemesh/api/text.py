"""Showing text a client sent: in a log line or an error message it is quoted, escaped and cut
short, so a value can neither forge log lines (a newline, an escape sequence) nor flood a log."""

from __future__ import annotations

from collections.abc import Iterable

MAX_SHOWN = 120  # characters of one value
MAX_LISTED = 3  # values of a list


def untrusted(value: str, limit: int = MAX_SHOWN) -> str:
    """`value` as a quoted, escaped Python literal of at most about `limit` characters."""
    if len(value) <= limit:
        return ascii(value)
    return f"{value[:limit]!a}… ({len(value)} characters)"


def untrusted_list(values: Iterable[str], limit: int = MAX_LISTED) -> str:
    """The first `limit` values, each as `untrusted` shows it, and how many more there were."""
    items = list(values)
    shown = ", ".join(untrusted(v) for v in items[:limit])
    more = len(items) - limit
    return f"{shown} and {more} more" if more > 0 else shown
