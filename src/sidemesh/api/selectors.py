"""Kubernetes label selectors (matchLabels + matchExpressions), evaluated the way the API
server evaluates a webhook's namespaceSelector and objectSelector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class Requirement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self) -> Requirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        # NotIn: a missing key satisfies NotIn, as in Kubernetes.
        return not present or labels[self.key] not in self.values

    def describe(self) -> str:
        if self.operator in ("Exists", "DoesNotExist"):
            return f"{self.key} {self.operator}"
        return f"{self.key} {self.operator} [{', '.join(self.values)}]"


class LabelSelector(BaseModel):
    """An empty selector matches everything (Kubernetes semantics)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[Requirement, ...] = Field(default=(), alias="matchExpressions")

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def requirements(self) -> tuple[Requirement, ...]:
        """matchLabels expressed as `In` requirements, followed by matchExpressions."""
        from_labels = tuple(
            Requirement(key=k, operator="In", values=(v,)) for k, v in self.match_labels.items()
        )
        return from_labels + self.match_expressions

    def describe(self) -> str:
        reqs = self.requirements()
        return ", ".join(r.describe() for r in reqs) if reqs else "(everything)"

    def to_kubernetes(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [
                {
                    "key": r.key,
                    "operator": r.operator,
                    **({"values": list(r.values)} if r.values else {}),
                }
                for r in self.match_expressions
            ]
        return out


def expr(key: str, operator: Operator, *values: str) -> Requirement:
    """Shorthand used by the webhook layouts: `expr("istio.io/rev", "In", "canary")`."""
    return Requirement(key=key, operator=operator, values=values)


def selector(*requirements: Requirement) -> LabelSelector:
    return LabelSelector(match_expressions=requirements)
