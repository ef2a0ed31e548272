"""Volume mount points stay inside the container: a `mountPath` missing on the host is made in a
private tmpfs, never on the host, where pods and runtimes would share it and one's cleanup
would unmount another's volumes. And `down` never removes a mount point someone still uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sidemesh.local import teardown

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mount namespaces and bind mounts need root"
)

CONTAINER = """
import json, os, sys
from sidemesh.local import launch

mounts = json.loads(sys.argv[1])
launch.mount_volumes(mounts)
seen = {m["target"]: open(os.path.join(m["target"], "f") if os.path.isdir(m["target"])
                          else m["target"]).read() for m in mounts}
print(json.dumps({"seen": seen, "hosts": os.path.exists("/etc/hosts")}))
"""


def in_private_mount_namespace(mounts: list[dict[str, object]]) -> dict[str, object]:
    """`launch.mount_volumes` as a container runs it: root, its own mount namespace."""
    completed = subprocess.run(
        ["unshare", "-m", "--propagation", "slave", sys.executable, "-c", CONTAINER,
         json.dumps(mounts)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def test_missing_mount_points_are_made_privately(tmp_path: Path) -> None:
    unique = f"sidemesh-test-{uuid.uuid4().hex[:8]}"
    volume, config = tmp_path / "volume", tmp_path / "config.yaml"
    volume.mkdir()
    (volume / "f").write_text("token")
    config.write_text("config")
    targets = [
        f"/var/run/{unique}/tokens",  # through the /var/run -> /run symlink
        f"/var/run/{unique}/istio",  # beside it, in the same private directory
        f"/etc/{unique}/proxy/config.yaml",  # a file, two directories deep
    ]
    mounts = [
        {"source": str(volume), "target": targets[0], "readonly": True},
        {"source": str(volume), "target": targets[1]},
        {"source": str(config), "target": targets[2]},
    ]
    seen = in_private_mount_namespace(mounts)
    assert seen == {
        "seen": {targets[0]: "token", targets[1]: "token", targets[2]: "config"},
        "hosts": True,  # the directory the tmpfs covers still shows what it held
    }
    for target in (f"/var/run/{unique}", f"/run/{unique}", f"/etc/{unique}"):
        assert not os.path.lexists(target), f"{target} made on the host"


def test_a_volume_over_the_state_directory_hides_no_later_source(tmp_path: Path) -> None:
    """An emptyDir mounted at a path that holds the other volumes' sources (istiod's /tmp, with
    the runtime's state under /tmp) must not hide them from the mounts after it."""
    state = tmp_path / "state"
    empty, token = state / "empty", state / "token"
    empty.mkdir(parents=True)
    token.mkdir()
    (empty / "f").write_text("empty")
    (token / "f").write_text("token")
    unique = f"sidemesh-test-{uuid.uuid4().hex[:8]}"
    mounts = [
        {"source": str(empty), "target": str(tmp_path)},  # covers `state` itself
        {"source": str(token), "target": f"/var/run/{unique}/tokens", "readonly": True},
    ]
    seen = in_private_mount_namespace(mounts)
    assert seen["seen"] == {str(tmp_path): "empty", f"/var/run/{unique}/tokens": "token"}


def test_down_leaves_a_mount_point_someone_uses(tmp_path: Path) -> None:
    used, unused = tmp_path / "used", tmp_path / "unused"
    used.mkdir()
    unused.mkdir()
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs none "{used}" && echo mounted && exec sleep 60'],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "mounted\n"
        assert str(used) in teardown.mount_points_in_use()
        assert teardown._remove_host_paths([str(used), str(unused)]) == 1
        assert used.exists() and not unused.exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert teardown._remove_host_paths([str(used)]) == 1
    assert not used.exists()
