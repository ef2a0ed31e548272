"""Golden files, for every area: compare output with the file kept beside the tests, or, with
SIDEMESH_UPDATE_GOLDEN=1, rewrite the file and fail.

Update mode never passes: a run that rewrote golden files must not look like a green run (CI
with the variable set by mistake would otherwise bless any output). Review the diff, then run
again without the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

UPDATE_VARIABLE = "SIDEMESH_UPDATE_GOLDEN"


def updating() -> bool:
    return os.environ.get(UPDATE_VARIABLE) == "1"


def update_golden(path: Path, actual: str | bytes) -> None:
    """In update mode: write `actual` to `path` if it differs, then fail the test either way."""
    assert updating()
    old = path.read_bytes() if path.exists() else None
    new = actual.encode() if isinstance(actual, str) else actual
    if old != new:
        path.write_bytes(new)
        what = f"rewrote {path}"
    else:
        what = f"{path} is up to date"
    pytest.fail(
        f"{what} ({UPDATE_VARIABLE}=1 never passes): review the diff, then run again without it",
        pytrace=False,
    )
