"""Fixtures for the whole-sidecar tests: a fresh namespace "cluster" per test, skipped with
the reason when this host cannot run them (not root, no `ip`/`iptables`/`setpriv`, no Envoy,
no network namespaces). A failing test's report carries every process's log tail."""

from __future__ import annotations

import functools
from collections.abc import Generator, Iterator

import pytest
from mesh_kit import MeshKit, missing_requirement

_missing = functools.cache(missing_requirement)


@pytest.fixture
def kit() -> Iterator[MeshKit]:
    reason = _missing()
    if reason is not None:
        pytest.skip(f"whole-sidecar test needs a real host: {reason}")
    with MeshKit() as mesh:
        yield mesh


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    mesh = getattr(item, "funcargs", {}).get("kit")
    if call.when == "call" and report.failed and isinstance(mesh, MeshKit):
        report.sections.append(("mesh process logs", mesh.logs()))
    return report
