"""kubectl's label syntax: `kubectl label` updates and `-l` selectors, with its messages.

`k=v` sets, `k-` removes; changing an existing value needs `--overwrite`; removing a label
that is not there is reported and is not an error. Selectors accept `k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k` and `!k`, comma separated, and evaluate with Kubernetes'
semantics (`k!=v` and `notin` match objects without the label).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sidemesh.api.selectors import LabelSelector, Operator, Requirement

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class LabelError(ValueError):
    """A label command or selector kubectl would refuse; the message is kubectl's."""


def key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (a qualified name), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "prefix part must be non-empty"
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return None


def value_problem(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _VALUE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )
    return None


@dataclass(frozen=True)
class LabelUpdate:
    set: dict[str, str]
    remove: tuple[str, ...]


def parse_label_args(args: Sequence[str]) -> LabelUpdate:
    """`["istio-injection-", "istio.io/rev=canary"]` -> what to set and what to remove."""
    to_set: dict[str, str] = {}
    to_remove: list[str] = []
    for arg in args:
        if "=" in arg:
            label_key, _, value = arg.partition("=")
            problem = key_problem(label_key)
            if problem is not None:
                raise LabelError(f'invalid label spec: "{arg}": {problem}')
            problem = value_problem(value)
            if problem is not None:
                raise LabelError(f'invalid label value: "{arg}": {problem}')
            to_set[label_key] = value
        elif arg.endswith("-") and len(arg) > 1:
            to_remove.append(arg[:-1])
        else:
            raise LabelError(f"invalid label spec: {arg}")
    if not to_set and not to_remove:
        raise LabelError("at least one label update is required")
    both = sorted(set(to_set) & set(to_remove))
    if both:
        raise LabelError("can not both modify and remove a label in the same command")
    return LabelUpdate(set=to_set, remove=tuple(to_remove))


@dataclass(frozen=True)
class LabelResult:
    labels: dict[str, str]
    changed: bool
    notes: tuple[str, ...]  # lines kubectl prints along the way (`label "x" not found.`)


def apply_label_update(
    labels: Mapping[str, str], update: LabelUpdate, *, overwrite: bool
) -> LabelResult:
    """The labels after `kubectl label`; raises LabelError as kubectl would (nothing changes)."""
    if not overwrite:
        for label_key, value in update.set.items():
            current = labels.get(label_key)
            if current is not None and current != value:
                raise LabelError(
                    f"'{label_key}' already has a value ({current}), and --overwrite is false"
                )
    result = dict(labels)
    notes = []
    for label_key in update.remove:
        if label_key not in result:
            notes.append(f'label "{label_key}" not found.')
        result.pop(label_key, None)
    result.update(update.set)
    return LabelResult(labels=result, changed=result != dict(labels), notes=tuple(notes))


def format_labels(labels: Mapping[str, str]) -> str:
    """kubectl's LABELS column: `k=v` pairs sorted as strings, or `<none>`."""
    if not labels:
        return "<none>"
    return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))


# --- selectors ------------------------------------------------------------------------------

_SET_EXPRESSION = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s+(in|notin)\s*\((.*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside `( )`."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise LabelError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise LabelError(f"unable to parse requirement: unbalanced '(' in {text!r}")
    parts.append(current)
    return [p.strip() for p in parts]


def _checked_key(label_key: str, text: str) -> str:
    problem = key_problem(label_key)
    if problem is not None:
        raise LabelError(f"unable to parse requirement: {text!r}: invalid label key: {problem}")
    return label_key


def parse_selector(text: str) -> LabelSelector:
    """kubectl's `-l` syntax as a LabelSelector (empty text selects everything)."""
    requirements: list[Requirement] = []
    if not text.strip():
        return LabelSelector()
    for part in _split_selector(text):
        if not part:
            raise LabelError(f"unable to parse requirement: empty requirement in {text!r}")
        match = _SET_EXPRESSION.match(part)
        if match is not None:
            bang, label_key, operator, values_text = match.groups()
            if bang:
                raise LabelError(f"unable to parse requirement: {part!r}")
            values = tuple(v.strip() for v in values_text.split(",") if v.strip())
            if not values:
                raise LabelError(f"unable to parse requirement: {part!r}: values are empty")
            requirements.append(
                Requirement(
                    key=_checked_key(label_key, part),
                    operator="In" if operator == "in" else "NotIn",
                    values=values,
                )
            )
            continue
        equality: tuple[tuple[str, Operator], ...] = (("!=", "NotIn"), ("==", "In"), ("=", "In"))
        for symbol, operator in equality:
            if symbol in part:
                label_key, _, value = part.partition(symbol)
                label_key, value = label_key.strip(), value.strip()
                problem = value_problem(value)
                if problem is not None:
                    raise LabelError(f"unable to parse requirement: {part!r}: {problem}")
                requirements.append(
                    Requirement(
                        key=_checked_key(label_key, part), operator=operator, values=(value,)
                    )
                )
                break
        else:
            if part.startswith("!"):
                label_key = part[1:].strip()
                requirements.append(
                    Requirement(key=_checked_key(label_key, part), operator="DoesNotExist")
                )
            else:
                requirements.append(Requirement(key=_checked_key(part, part), operator="Exists"))
    return LabelSelector(match_expressions=tuple(requirements))
