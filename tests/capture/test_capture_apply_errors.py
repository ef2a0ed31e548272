"""What `apply` says when the kernel refuses the restore input, without a kernel: the failing
line is quoted, and a missing socket match (the hold rules need it) says what to do."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from sidemesh.capture import CaptureError, build_capture_rules, parse_capture_config
from sidemesh.capture import apply as capture_apply


def test_a_missing_socket_match_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    family = build_capture_rules(parse_capture_config()).ipv4
    transaction = family.restore_input()
    line = next(n for n, text in enumerate(transaction.splitlines(), 1) if "-m socket" in text)

    def run(
        argv: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        stderr = f"iptables-restore: Couldn't load match `socket'\nError occurred at line: {line}"
        return subprocess.CompletedProcess(list(argv), 2, "", stderr)

    monkeypatch.setattr(capture_apply, "_run", run)
    with pytest.raises(CaptureError) as failure:
        capture_apply._restore(family, transaction)
    message = str(failure.value)
    assert "offending input line: -A ISTIO_AWAIT_PROXY" in message
    assert "--while-proxy-down refuse" in message
