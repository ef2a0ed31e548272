"""Istio's telemetry surface: the standard metrics' names and labels, the peer metadata two
sidecars exchange so each side knows the other's workload, and (`telemetry.istio.io`) the
Telemetry API.

The Telemetry API's names load on first use: the agent imports `peer` from this package and
must not pay for pydantic (its footprint is measured, tests/agent/test_agent_footprint.py)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sidemesh.api.telemetry.model import Telemetry
    from sidemesh.api.telemetry.validation import GROUP, KIND, VERSIONS, is_telemetry, validate

__all__ = ["GROUP", "KIND", "VERSIONS", "Telemetry", "is_telemetry", "validate"]

_HOMES = {"Telemetry": "model", **{n: "validation" for n in __all__ if n != "Telemetry"}}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
