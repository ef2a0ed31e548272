"""Go/protobuf durations as Istio's YAML writes them (`5s`, `1m30s`, `500ms`, `1.5h`): the one
reader for every config that carries one (proxy settings, traffic policy)."""

from __future__ import annotations

import re
from typing import Final

_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS: Final = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}  # fmt: skip


def go_duration_seconds(text: str) -> float | None:
    """Seconds in `text`, or None when it is not a sequence of number+unit parts."""
    position, seconds = 0, 0.0
    for part in _PART.finditer(text):
        if part.start() != position:
            break
        seconds += float(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    return seconds if text and position == len(text) else None
