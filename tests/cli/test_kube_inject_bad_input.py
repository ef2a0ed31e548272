"""Bad input to `kube-inject` (and `check-inject`, the same reader): one line naming the file
(and line), exit 1, nothing written. The same cases for `local apply` are in
tests/local/test_local_apply_input.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidemesh.cli.check_inject import check_inject
from sidemesh.cli.kube_inject import kube_inject

SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n"
POD = (
    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"
    "spec:\n  containers:\n  - {name: a, image: x}\n"
)
BAD_ANNOTATION = POD.replace(
    "  name: web\n", "  name: bad\n  annotations: {sidecar.istio.io/proxyCPU: lots}\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes | None  # the file's bytes; None: a directory
    stdin: bool  # given on standard input instead of as a file
    message: str  # the one line on stderr; {path} is the file

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("binary-file", b"\x7fELF\x02\x01\x01\x00\xff\xfe" * 8, False,
         "Error: {path}: not UTF-8 text: invalid start byte"),
    Case("non-utf8-stdin", b"kind: Pod\nname: caf\xe9\n", True,
         "Error: <stdin>: not UTF-8 text: invalid continuation byte"),
    Case("nul-byte-line-2", b"kind: Pod\nname: a\x00\n", False,
         "Error: {path}:2: not YAML text: control characters are not allowed (character #x0000)"),
    Case("invalid-yaml-line-9",
         (SERVICE + "---\nkind: Pod\nmetadata:\n  name: x\n    bad: 1\n").encode(), False,
         "Error: {path}:9: YAML document 2 cannot be read: "
         "mapping values are not allowed in this context"),
    Case("invalid-yaml-stdin", b"kind: [unclosed\n", True,
         "Error: <stdin>:2: YAML document 1 cannot be read: "
         "did not find expected ',' or ']'"),
    Case("empty-file", b"", False, "Error: {path}: no objects passed to {command}"),
    Case("only-comments", b"# nothing\n---\n---\n", False,
         "Error: {path}: no objects passed to {command}"),
    Case("empty-stdin", b"", True, "Error: <stdin>: no objects passed to {command}"),
    Case("empty-directory", None, False, "Error: {path}: cannot read: Is a directory"),
    Case("second-document-refused", (SERVICE + "---\n" + BAD_ANNOTATION).encode(), False,
         "Error: {path}: document 2 (Pod/bad): annotation sidecar.istio.io/proxyCPU"),
]  # fmt: skip


def given(case: Case, tmp_path: Path) -> tuple[Path, str, bytes | None]:
    """(the file, the -f argument, stdin) for a case."""
    path = tmp_path / "in.yaml"
    if case.content is None:
        path.mkdir()
    elif not case.stdin:
        path.write_bytes(case.content)
    return path, "-" if case.stdin else str(path), case.content if case.stdin else None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_writes_nothing(case: Case, tmp_path: Path) -> None:
    path, source, stdin = given(case, tmp_path)
    output = tmp_path / "out.yaml"
    result = CliRunner().invoke(kube_inject, ["-f", source, "-o", str(output)], input=stdin)
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    expected = case.message.format(path=path, command="kube-inject")
    assert line.startswith(expected), (line, expected)
    assert not output.exists()


@pytest.mark.parametrize("case", [c for c in CASES if "refused" not in c.name], ids=str)
def test_check_inject_reads_the_same_way(case: Case, tmp_path: Path) -> None:
    path, source, stdin = given(case, tmp_path)
    result = CliRunner().invoke(
        check_inject, ["-f", source, "--namespace-labels", "istio-injection=enabled"], input=stdin
    )
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(case.message.format(path=path, command="check-inject")), line


def test_second_document_refused_names_the_reason_in_full(tmp_path: Path) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(SERVICE + "---\n" + BAD_ANNOTATION, encoding="utf-8")
    result = CliRunner().invoke(kube_inject, ["-f", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "lots" in result.stderr
