"""Control-plane restarts under traffic, measured. Prints ONE JSON line. Needs root.

On the local runtime: a control plane and the demo app (4 meshed pods) under steady traffic
(client -> frontend -> backend, a request every 50 ms, through 4 sidecars); then the istiod pod
is deleted `--restarts` times (its Deployment starts a new one, with a new pod address), or
with `--outage-seconds S` stopped, left down S seconds and started again each time.

* `resync_s`, `resync_p50_s`, `resync_max_s`: per restart, from the new control-plane pod
  being Ready in the runtime's state to every sidecar being SYNCED in its `/debug/syncz` (what
  `sidemesh proxy-status` shows); both sides polled every 0.1 s.
* `failed_requests` / `requests`: the traffic loop's failed and answered requests from the
  first restart to the last resync.

Every wait is bounded. Nothing here gates CI.

    sudo .venv/bin/python benchmarks/recovery.py [--restarts N] [--outage-seconds S]
                                                 [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "local"))

from recovery_kit import MESHED_PODS, RecoveryMesh

from sidemesh.demo.runner import environment_problems
from sidemesh.demo.session import StepFailed

RESTART_TIMEOUT_SECONDS = 120.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--outage-seconds", type=float, default=0.0)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    problems = environment_problems()
    if problems:
        print(json.dumps({"error": "cannot run here", "problems": problems}))
        return 3
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="sm-recovery-")) / "state"
    mesh = RecoveryMesh(state_dir)
    resyncs: list[float] = []
    error = None
    ok = failed = 0
    try:
        mesh.start()
        traffic = mesh.start_traffic()
        try:
            traffic.wait_for_requests(20, timeout=60)
            ok_before, failed_before = traffic.ok, len(traffic.failures)
            for _ in range(args.restarts):
                resync = mesh.restart_control_plane(
                    RESTART_TIMEOUT_SECONDS, outage=args.outage_seconds
                )
                resyncs.append(round(resync, 2))
            ok, failed = traffic.ok - ok_before, len(traffic.failures) - failed_before
        finally:
            traffic.stop()
    except (RuntimeError, TimeoutError, AssertionError, StepFailed) as exc:
        error = str(exc)
    finally:
        mesh.close()
    print(
        json.dumps(
            {
                "benchmark": "recovery",
                "ok": error is None,
                "error": error,
                "meshed_pods": MESHED_PODS,
                "restarts": len(resyncs),
                "outage_s": args.outage_seconds,
                "resync_s": resyncs,
                "resync_p50_s": round(statistics.median(resyncs), 2) if resyncs else None,
                "resync_max_s": max(resyncs) if resyncs else None,
                "requests": ok + failed,
                "failed_requests": failed,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
