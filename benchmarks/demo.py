"""`sidemesh demo`, measured. Prints ONE JSON line. Needs root (the local runtime).

* `demo_wall_s`: the whole walk-through, start to clean-up (control planes, app, injection,
  mTLS and STRICT checks, upgrade, `down`), narration discarded.
* `restart_to_ready_s`: per `rollout restart` (first the injection of revision 1, then the
  upgrade to revision 2), from issuing the command to every demo pod (4) being 2/2 with the
  new revision's sidecar, as seen in the runtime's state (polled every 0.5 s, so up to 0.5 s
  coarse).
* `sidecar_rss_mib`: the RSS of one injected pod's sidecar processes (agent + Envoy: the
  processes of the proxy uid 1337 in its network namespace), right after the first rollout.

Every wait is bounded (the demo's own bounds). Nothing here gates CI.

    sudo .venv/bin/python benchmarks/demo.py [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from sidemesh.demo.runner import DemoSettings, environment_problems, run_demo

MANIFEST = Path(__file__).resolve().parents[1] / "examples" / "demo" / "demo.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    problems = environment_problems()
    if problems:
        print(json.dumps({"error": "cannot run here", "problems": problems}))
        return 3
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="sm-bench-")) / "state"
    started = time.monotonic()
    outcomes = run_demo(
        DemoSettings(state_dir=state_dir, manifest=MANIFEST),
        Console(file=io.StringIO(), width=200),
    )
    wall = time.monotonic() - started
    ok = bool(outcomes) and all(o.ok for o in outcomes)
    restarts = [
        round(float(o.facts["restart_to_ready_s"]), 2)
        for o in outcomes
        if "restart_to_ready_s" in o.facts
    ]
    rss = next(
        (o.facts["sidecar_rss_bytes"] for o in outcomes if "sidecar_rss_bytes" in o.facts), 0
    )
    print(
        json.dumps(
            {
                "benchmark": "demo",
                "ok": ok,
                "failed_step": next((f"{o.number}: {o.error}" for o in outcomes if not o.ok), None),
                "demo_wall_s": round(wall, 1),
                "restart_to_ready_s": restarts,
                "pods_per_restart": 4,
                "sidecar_rss_mib": round(rss / 2**20, 1),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
