"""Piped or in CI, the command line wraps nothing: a command shown on one line can be pasted,
and a table row is one line a script can read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COMMAND = (
    "sidemesh local --state-dir /run/sidemesh-local/a/rather/long/state/directory/for/the/demo "
    "get pods -n demo --show-labels"
)


def piped(*argv: str) -> str:
    """Run `argv` with stdout a pipe (as in CI), and its output."""
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=True, env={"PATH": "/usr/bin"}
    )
    return completed.stdout


def test_a_long_command_printed_by_the_cli_console_stays_on_one_line() -> None:
    script = (
        "from rich.text import Text\n"
        "from sidemesh.cli.console import make_console\n"
        "console = make_console()\n"
        f"console.print(Text('$ ' + {COMMAND!r}, style='bold cyan'))\n"
        f"console.print('Explore: `' + {COMMAND!r} + '`; finish with `sidemesh local down`.')\n"
    )
    lines = piped(sys.executable, "-c", script).splitlines()
    assert lines == [
        f"$ {COMMAND}",
        f"Explore: `{COMMAND}`; finish with `sidemesh local down`.",
    ]


def test_a_wide_table_is_not_folded(tmp_path: Path) -> None:
    names = [f"workload-with-a-name-long-enough-to-fold-a-table-{i}-" + "x" * 60 for i in range(3)]
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(
        "\n---\n".join(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo}}\n"
            "spec: {containers: [{name: app, image: busybox}]}"
            for name in names
        )
    )
    sidemesh = [sys.executable, "-c", "from sidemesh.cli.main import main; main()"]
    output = piped(
        *sidemesh, "check-inject", "-f", str(manifest),
        "--namespace-labels", "istio-injection=enabled",
    )  # fmt: skip
    lines = output.splitlines()
    assert len(lines) == 1 + len(names), output  # the header, then one line per workload
    for name, line in zip(names, lines[1:], strict=True):
        assert name in line and "Pod" in line, line
