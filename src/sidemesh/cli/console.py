"""The command line's one rich Console.

On a terminal it has the terminal's width. Piped or in CI nothing is wrapped: rich would
otherwise wrap at 80 columns, splitting a command in two (`sidemesh local --state-dir ` /
`/run/sidemesh-local get pods -n demo`) so that it can no longer be pasted, and folding table
cells so that a script cannot read the rows.
"""

from __future__ import annotations

from rich.console import Console

# Wide enough that no table is folded when piped; text is never wrapped anyway (soft_wrap).
PIPED_WIDTH = 10_000


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    return console
