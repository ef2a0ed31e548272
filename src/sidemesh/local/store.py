"""The state file: one JSON document, changed under an exclusive lock and replaced atomically.

The CLI and the daemon both read-modify-write it; `fcntl.flock` on a separate lock file
serialises them (the lock dies with its holder, so a crashed writer never wedges anyone).
Readers that only look need no lock: a rename is atomic, so they see the old document or the
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from sidemesh.local.model import NetworkRecord, State

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


class StateError(RuntimeError):
    """The state file is missing or unreadable; the message says which and why."""


class Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.lock_path = directory / LOCK_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def initialize(self, network: NetworkRecord) -> None:
        """Create the directory and an empty state if there is none yet."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked():
            if not self.path.exists():
                self._write(State(network=network))

    def read(self) -> State:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise StateError(
                f"no local runtime state at {self.directory} (nothing applied yet)"
            ) from None
        return _decode(data, self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[State]:
        """Lock, load, let the caller change the state, write it back if it changed."""
        with self._locked():
            before = self.path.read_bytes() if self.path.exists() else b""
            if not before:
                raise StateError(f"no local runtime state at {self.directory}")
            state = _decode(before, self.path)
            original = _encode(state)
            yield state
            if _encode(state) != original:
                state.generation += 1
                self._write(state)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, state: State) -> None:
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(_encode(state))
        # No fsync: the rename alone keeps readers and crashed writers consistent, and the
        # state lives in /run (tmpfs) by default, gone at reboot like the namespaces it names.
        os.replace(tmp, self.path)


def _encode(state: State) -> bytes:
    return orjson.dumps(state.model_dump(mode="json"), option=orjson.OPT_INDENT_2)


def _decode(data: bytes, path: Path) -> State:
    try:
        return State.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValueError) as exc:
        raise StateError(
            f"{path}: unreadable state ({exc}); `sidemesh local down` resets it"
        ) from exc
