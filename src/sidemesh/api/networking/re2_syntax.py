r"""Regular expressions as Envoy and Istio read them: RE2 syntax, and Envoy's limit on the size
of the compiled program.

Python's `re` accepts what RE2 refuses (backreferences `\1`, lookaround `(?=` `(?!` `(?<=`,
atomic groups `(?>`, possessive repeats `a++`) and Envoy would NACK the whole route table for
one of them, so the check compiles with RE2 itself (the `google-re2` binding). Envoy also
refuses a regex whose RE2 program is larger than its runtime key
`re2.max_program_size.error_level`: 100 unless the bootstrap raises it (measured on Envoy
1.40: `a{2,1000}`, program size 2002, is refused with "RE2 program size of 2002 > max program
size of 100"). Our bootstrap raises it to 32768 as Istio's does (`api.envoy_runtime`), and
that is the limit checked here; Istio itself checks only the length (1024).

The size is measured, not guessed, but Envoy's RE2 build compiles some constructs smaller than
this binding's: for ASCII literals, classes and repeats the two agree exactly (`a{2,1000}`
2002, `[a-z]{3,20}` 41), while for `.`, negated and Unicode classes Envoy's program is smaller
(`.` 6 against 12, `\pL` 6 against 1200). The same pattern compiled over bytes (Latin-1) is
close to Envoy's there, so the smaller of the two sizes is checked: no pattern Envoy accepts
is refused for its size; a pattern heavy with Unicode classes may still pass a little above.
"""

from __future__ import annotations

import contextlib
from typing import Final

import re2  # type: ignore[import-untyped]

from sidemesh.api.envoy_runtime import RE2_MAX_PROGRAM_SIZE

# `re2.max_program_size.error_level` as every sidemesh Envoy runs with it.
ENVOY_MAX_PROGRAM_SIZE: Final = RE2_MAX_PROGRAM_SIZE

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the reason goes back to the user, not to stderr
_BYTES_OPTIONS = re2.Options()
_BYTES_OPTIONS.log_errors = False
_BYTES_OPTIONS.encoding = re2.Options.Encoding.LATIN1


def regex_problem(pattern: str, max_program_size: int = ENVOY_MAX_PROGRAM_SIZE) -> str | None:
    """Why Envoy would refuse `pattern` (RE2 syntax or program size), or None."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        return f"invalid regex (RE2 syntax): {reason}"
    size = int(compiled.programsize)
    if size > max_program_size:
        with contextlib.suppress(re2.error):  # valid as UTF-8 (above) is what Envoy needs
            size = min(size, int(re2.compile(pattern.encode(), _BYTES_OPTIONS).programsize))
    if size > max_program_size:
        return (
            f"regex is too complex for Envoy: RE2 program size {size} > {max_program_size} "
            "(re2.max_program_size.error_level); simplify it, e.g. bound fewer repeats"
        )
    return None
