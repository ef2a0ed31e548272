"""Where the runtime keeps things: one directory (default /run/sidemesh-local)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STATE_DIR = Path("/run/sidemesh-local")
STATE_DIR_ENV = "SIDEMESH_LOCAL_STATE"


def state_dir_from(option: Path | None) -> Path:
    """`--state-dir`, else $SIDEMESH_LOCAL_STATE, else /run/sidemesh-local."""
    if option is not None:
        return option.absolute()
    from_env = os.environ.get(STATE_DIR_ENV)
    return Path(from_env).absolute() if from_env else DEFAULT_STATE_DIR


@dataclass(frozen=True)
class RuntimePaths:
    root: Path

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def registry_file(self) -> Path:
        return self.registry / "local.yaml"

    @property
    def daemon_lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def daemon_pid(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def wakeup_socket(self) -> Path:
        return self.root / "wakeup.sock"

    def pod_dir(self, uid: str) -> Path:
        return self.pods / uid
