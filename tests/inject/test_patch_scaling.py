"""Patch cost is linear in the pod's size (Istio once took 15 s on a pod with 1,500 env vars).
Measured by counting work and operations, never by timing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sidemesh.inject import patch
from sidemesh.inject.engine import Injector


def big_pod(env_count: int) -> dict[str, Any]:
    env = [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(env_count)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "big", "namespace": "demo", "labels": {"app": "big"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1", "env": env}]},
    }


@pytest.fixture
def slot_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts `_same_slot` comparisons, the unit of work of list alignment."""
    calls = [0]
    original = patch._same_slot

    def counting(old: Any, new: Any) -> bool:
        calls[0] += 1
        return original(old, new)

    monkeypatch.setattr(patch, "_same_slot", counting)
    yield calls


def ops_of(env_count: int) -> list[dict[str, Any]]:
    outcome = Injector().admit(big_pod(env_count), "demo")
    assert outcome.kind == "injected" and outcome.patch is not None
    ops: list[dict[str, Any]] = json.loads(outcome.patch)
    return ops


def test_unchanged_env_vars_cost_no_operations() -> None:
    small, large = ops_of(1), ops_of(2000)
    assert len(large) == len(small)
    assert not any(op["path"].startswith("/spec/containers/0/") for op in large)
    # The patch carries what injection adds, not the user's 2,000 variables.
    assert len(json.dumps(large)) < len(json.dumps(small)) + 100


def test_reinjecting_a_big_pod_gives_an_empty_patch() -> None:
    injector = Injector()
    injected = injector.inject(big_pod(2000), "demo")
    outcome = injector.admit(injected, "demo")
    assert outcome.patch is not None and json.loads(outcome.patch) == []


def test_admission_work_does_not_grow_with_env_size(slot_calls: list[int]) -> None:
    Injector().admit(big_pod(500), "demo")
    small = slot_calls[0]
    slot_calls[0] = 0
    Injector().admit(big_pod(2000), "demo")
    large = slot_calls[0]
    # Unchanged lists are skipped by identity: the env size does not matter at all.
    assert large == small


def named(count: int, prefix: str = "item") -> list[dict[str, str]]:
    return [{"name": f"{prefix}-{i}", "value": "x"} for i in range(count)]


@pytest.mark.parametrize("where", ["front", "middle", "end", "remove-middle", "change-middle"])
def test_list_alignment_is_linear(where: str, slot_calls: list[int]) -> None:
    def work(size: int) -> tuple[int, int]:
        old = named(size)
        new = [dict(item) for item in old]  # equal but not shared: forces comparisons
        middle = size // 2
        if where == "front":
            new.insert(0, {"name": "new"})
        elif where == "middle":
            new.insert(middle, {"name": "new"})
        elif where == "end":
            new.append({"name": "new"})
        elif where == "remove-middle":
            del new[middle]
        else:
            new[middle] = {"name": new[middle]["name"], "value": "changed"}
        slot_calls[0] = 0
        ops = patch.create_patch({"env": old}, {"env": new})
        return slot_calls[0], len(ops)

    calls_1k, ops_1k = work(1000)
    calls_4k, ops_4k = work(4000)
    assert calls_1k <= 2 * 1000 + 2
    assert calls_4k <= 2 * 4000 + 2
    assert ops_4k == ops_1k == 1  # one add, remove or replace, whatever the size


def test_big_append_is_one_operation_per_new_item() -> None:
    old = {"env": named(3000)}
    new = {"env": [*old["env"], *named(3, "extra")]}
    ops = patch.create_patch(old, new)
    assert [op["op"] for op in ops] == ["add", "add", "add"]
    assert [op["path"] for op in ops] == ["/env/3000", "/env/3001", "/env/3002"]
