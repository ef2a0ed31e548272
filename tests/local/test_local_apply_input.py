"""Bad input to `local apply -f`: kubectl's one-line error naming the file (and line),
exit 1, and nothing applied: unreadable input is refused before the runtime is touched, and a
file with one refused object applies none of its objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sidemesh.cli.local import local
from sidemesh.local.apiserver import SUPPORTED_KINDS
from sidemesh.local.store import Store

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata: {a: b}\n"
WIDGET = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
ELSEWHERE = CONFIGMAP.replace("  name: settings\n", "  name: other\n  namespace: nope\n")


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes | None  # the file's bytes; None: an empty directory
    stdin: bool
    messages: tuple[str, ...]  # stderr, line by line; {path} is the file

    def __str__(self) -> str:
        return self.name


UNREADABLE = [
    Case("binary-file", b"\x7fELF\x02\x01\x01\x00\xff\xfe" * 8, False,
         ("error: {path}: not UTF-8 text: invalid start byte",)),
    Case("non-utf8-stdin", b"kind: ConfigMap\nname: caf\xe9\n", True,
         ("error: <stdin>: not UTF-8 text: invalid continuation byte",)),
    Case("invalid-yaml-line-10", (CONFIGMAP + "---\nkind: Pod\nmetadata:\n  name: x\n    bad: 1\n"
                                 ).encode(), False,
         ("error: {path}:10: YAML document 2 cannot be read: "
          "mapping values are not allowed in this context",)),
    Case("nul-byte-line-2", b"kind: Pod\nname: a\x00\n", False,
         ("error: {path}:2: not YAML text: control characters are not allowed "
          "(character #x0000)",)),
    Case("empty-file", b"", False, ("error: no objects passed to apply",)),
    Case("only-comments", b"# nothing\n---\n", False, ("error: no objects passed to apply",)),
    Case("empty-stdin", b"", True, ("error: no objects passed to apply",)),
    Case("empty-directory", None, False, ("error: no objects passed to apply",)),
]  # fmt: skip
REFUSED = [
    Case("second-document-unsupported-kind", (CONFIGMAP + "---\n" + WIDGET).encode(), False,
         ('error: sidemesh local does not run kind "Widget" (object "w"); '
          f"supported: {', '.join(SUPPORTED_KINDS)}",
          "error: nothing was applied: 1 refused (above)")),
    Case("second-document-missing-namespace", (CONFIGMAP + "---\n" + ELSEWHERE).encode(), False,
         ('Error from server (NotFound): error when creating "{path}": namespaces "nope" not found',
          "error: nothing was applied: 1 refused (above)")),
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_host_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root and tools are not what these tests are about (test_local_preflight is)."""
    monkeypatch.setattr("sidemesh.local.runtime.Runtime.check", lambda self: None)


def apply(case: Case, tmp_path: Path) -> tuple[Result, Path]:
    path = tmp_path / "in.yaml"
    if case.content is None:
        path.mkdir()
    elif not case.stdin:
        path.write_bytes(case.content)
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(
        local,
        ["--state-dir", str(state_dir), "apply", "-f", "-" if case.stdin else str(path)],
        input=case.content if case.stdin else None,
    )
    return result, path


@pytest.mark.parametrize("case", UNREADABLE + REFUSED, ids=str)
def test_bad_input_is_kubectls_error_and_applies_nothing(case: Case, tmp_path: Path) -> None:
    result, path = apply(case, tmp_path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [m.format(path=path) for m in case.messages]
    if case in UNREADABLE:  # refused before the runtime is touched
        assert not (tmp_path / "state").exists()
    else:  # the first document, valid, was not applied either
        assert Store(tmp_path / "state").read().configmaps == {}
