"""The state file: locked read-modify-write, atomic replacement, events folded."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from sidemesh.local.model import EVENT_LIMIT, NetworkRecord, State
from sidemesh.local.store import StateError, Store

NETWORK = NetworkRecord(prefix="sm-test", node_netns="sm-test-node")


def test_initialize_read_and_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with pytest.raises(StateError, match="nothing applied yet"):
        store.read()
    store.initialize(NETWORK)
    store.initialize(NETWORK)  # idempotent
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    generation = store.read().generation
    with store.transaction() as state:
        state.host_paths.append("/x")
    assert store.read().host_paths == ["/x"]
    assert store.read().generation == generation + 1
    with store.transaction():
        pass  # unchanged: not written
    assert store.read().generation == generation + 1
    assert not list((tmp_path / "state").glob("*.tmp"))


def _append(directory: str, value: str) -> None:
    for _ in range(20):
        with Store(Path(directory)).transaction() as state:
            state.host_paths.append(value)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.initialize(NETWORK)
    workers = [
        multiprocessing.Process(target=_append, args=(str(tmp_path), str(n))) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(store.read().host_paths) == sorted(str(n) for n in range(4) for _ in range(20))


def test_corrupt_state_says_how_to_recover(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.initialize(NETWORK)
    store.path.write_text("{not json")
    with pytest.raises(StateError, match="`sidemesh local down` resets it"):
        store.read()


def test_events_fold_repeats_and_are_bounded() -> None:
    state = State(network=NETWORK)
    for now in (1.0, 2.0):
        state.record_event(
            namespace="demo",
            object="pod/p",
            type="Warning",
            reason="Unhealthy",
            message="Readiness probe failed",
            now=now,
        )
    assert len(state.events) == 1
    assert (state.events[0].count, state.events[0].first, state.events[0].last) == (2, 1.0, 2.0)
    for n in range(EVENT_LIMIT + 10):
        state.record_event(
            namespace="demo",
            object=f"pod/{n}",
            type="Normal",
            reason="Started",
            message="m",
            now=3.0,
        )
    assert len(state.events) == EVENT_LIMIT and state.events[-1].object == f"pod/{EVENT_LIMIT + 9}"
