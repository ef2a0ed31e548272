"""The runtime as the CLI sees it: checks, the state, the daemon, and the few requests that
need more than a state change (creating a bare pod goes through admission; deletes wait)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sidemesh.api import names
from sidemesh.local import apiserver, supervisor
from sidemesh.local.admission import AdmissionError, admit, apply_pod_defaults
from sidemesh.local.attached import run_attached
from sidemesh.local.controlplane import (
    ControlPlaneOptions,
    control_plane_objects,
    revision_labels,
    serving_names,
)
from sidemesh.local.model import ControlPlaneRecord, NetworkRecord, PodRecord, State, key
from sidemesh.local.naming import node_netns, runtime_prefix
from sidemesh.local.netns import connect_in_netns
from sidemesh.local.paths import RuntimePaths
from sidemesh.local.pki import LocalPki
from sidemesh.local.preflight import missing_requirements
from sidemesh.local.store import Store
from sidemesh.local.teardown import down

POLL_SECONDS = 0.2


class RuntimeUnavailable(RuntimeError):
    """This host cannot run the local runtime; the message says what is needed."""


class Runtime:
    def __init__(self, state_dir: Path) -> None:
        self.paths = RuntimePaths(state_dir)
        self.store = Store(state_dir)
        self.prefix = runtime_prefix(state_dir)
        self.pki = LocalPki(state_dir)

    # --- lifecycle --------------------------------------------------------------------------

    def check(self) -> None:
        problems = missing_requirements()
        if problems:
            raise RuntimeUnavailable(
                "sidemesh local cannot run here:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    def init(self) -> None:
        """State directory, CA and the system namespaces (nothing on the network yet)."""
        self.store.initialize(NetworkRecord(prefix=self.prefix, node_netns=node_netns(self.prefix)))
        self.pki.ensure()
        with self.store.transaction() as state:
            apiserver.ensure_system_namespaces(state, time.time())

    def start(self) -> None:
        supervisor.ensure_daemon(self.paths)

    def wake(self) -> None:
        supervisor.wake(self.paths)

    def read(self) -> State | None:
        return self.store.read() if self.store.exists() else None

    def down(self) -> list[str]:
        return down(self.paths, self.prefix)

    def wait_until(self, done: Callable[[State], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            state = self.read()
            if state is None or done(state):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)

    # --- requests ---------------------------------------------------------------------------

    def apply(
        self, documents: Iterable[Any], *, source: str, default_namespace: str
    ) -> tuple[list[str], list[str]]:
        """(lines for stdout, lines for stderr) as kubectl prints them; a stderr line that does
        not start with `Warning: ` is a refusal."""
        with self.store.transaction() as state:
            result = apiserver.apply_objects(
                state, documents, now=time.time(), default_namespace=default_namespace
            )
        errors = [apiserver.name_file(e, source) for e in result.errors]
        lines = list(result.lines)
        if result.pods:
            self.start()
            for pod in result.pods:
                try:
                    line, warnings = self.create_pod(pod)
                except (AdmissionError, apiserver.ApiError) as exc:
                    errors.append(f'Error from server: error when creating "{source}": {exc}')
                    continue
                # The admission webhooks' warnings, as kubectl shows them (on stderr).
                errors += [f"Warning: {warning}" for warning in warnings]
                lines.append(line)
        return lines, errors

    def create_pod(self, pod: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
        """A bare pod: admitted by the webhooks as the API server would, then stored; kubectl's
        line and the webhooks' warnings."""
        state = self.store.read()
        namespace = str(pod["metadata"]["namespace"])
        labels = state.namespaces[namespace].labels
        node = state.network.node_netns

        def connect(host: str, port: int, timeout: float) -> Any:
            return connect_in_netns(node, host, port, timeout)

        result = admit(
            apply_pod_defaults(pod),
            namespace,
            namespace_labels=labels,
            control_planes=list(state.control_planes.values()),
            services=state.services,
            ca_pem=self.pki.root_pem(),
            connect=connect,
        )
        with self.store.transaction() as current:
            record = apiserver.store_admitted_pod(current, result.pod, owner=None, now=time.time())
        self.wake()
        return f"pod/{record.name} created", result.warnings

    def delete_pods(
        self, namespace: str, pod_names: list[str], *, everything: bool, grace: int | None
    ) -> list[str]:
        with self.store.transaction() as state:
            deleted = apiserver.delete_pods(
                state,
                namespace,
                pod_names,
                everything=everything,
                now=time.time(),
                grace_seconds=grace,
            )
        self.wake()
        return deleted

    def delete_objects(self, targets: list[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
        """`delete KIND NAME` / `delete -f`: (lines, errors), as kubectl prints them."""
        lines, errors = [], []
        with self.store.transaction() as state:
            for kind, namespace, name in targets:
                try:
                    lines.append(apiserver.delete_object(state, kind, namespace, name, time.time()))
                except apiserver.ApiError as exc:
                    errors.append(str(exc))
        self.wake()
        return lines, errors

    def wait_pods_gone(self, namespace: str, pod_names: list[str], timeout: float) -> bool:
        def gone(state: State) -> bool:
            return not any(key(namespace, n) in state.pods for n in pod_names)

        return self.wait_until(gone, timeout)

    # --- control planes ---------------------------------------------------------------------

    def start_control_plane(self, options: ControlPlaneOptions) -> list[str]:
        now = time.time()
        service = names.service_name(options.revision)
        state = self.store.read()
        tls = state.secrets.get(key(names.CONTROL_PLANE_NAMESPACE, f"{service}-tls"))
        if tls is not None:
            data = apiserver.object_data(tls)
            cert, private_key = data["tls.crt"], data["tls.key"]
        else:
            cert, private_key = self.pki.serving_certificate(serving_names(options.revision))
        objects = control_plane_objects(
            options,
            serving_cert=cert,
            serving_key=private_key,
            ca_files=self.pki.ca_files(),
            state_dir=self.paths.root,
        )
        with self.store.transaction() as current:
            space = apiserver.ensure_namespace(current, names.CONTROL_PLANE_NAMESPACE, now)
            if not {names.LABEL_INJECTION, names.LABEL_REVISION} & set(space.labels):
                # The control plane's own pods carry istio.io/rev, which the revision's object
                # selector matches: without this a control plane that is down entirely could
                # never be recreated (its webhook is failurePolicy Fail). Istio installs the
                # namespace the same way.
                space.labels[names.LABEL_INJECTION] = "disabled"
            result = apiserver.apply_objects(
                current, objects, now=now, default_namespace=names.CONTROL_PLANE_NAMESPACE
            )
            if options.default:
                for plane in current.control_planes.values():
                    plane.default = False
            existing = current.control_planes.get(options.revision)
            current.control_planes[options.revision] = ControlPlaneRecord(
                revision=options.revision,
                default=options.default,
                created=existing.created if existing else now,
            )
        if result.errors:
            raise apiserver.ApiError("\n".join(result.errors))
        return result.lines

    def wait_control_plane_ready(self, options: ControlPlaneOptions, timeout: float) -> bool:
        wanted = revision_labels(options.revision)

        def ready(state: State) -> bool:
            pods = [
                p
                for p in state.pods.values()
                if p.namespace == names.CONTROL_PLANE_NAMESPACE
                and all(p.labels.get(k) == v for k, v in wanted.items())
                and not p.terminating
            ]
            return len(pods) >= options.replicas and all(p.ready for p in pods)

        return self.wait_until(ready, timeout)

    def stop_control_plane(self, revision: str) -> list[str]:
        service = names.service_name(revision)
        namespace = names.CONTROL_PLANE_NAMESPACE
        lines = []
        with self.store.transaction() as state:
            if state.control_planes.pop(revision, None) is None:
                raise apiserver.ApiError(
                    f'error: no local control plane with revision "{revision}"'
                )
            for kind, name in (
                ("Deployment", service),
                ("Service", service),
                ("Secret", f"{service}-tls"),
            ):
                try:
                    lines.append(apiserver.delete_object(state, kind, namespace, name, time.time()))
                except apiserver.ApiError:
                    continue
        self.wake()
        return lines

    # --- pods' files ------------------------------------------------------------------------

    def find_pod(self, namespace: str, name: str) -> PodRecord:
        state = self.read()
        pod = state.pods.get(key(namespace, name)) if state else None
        if pod is None:
            raise apiserver.ApiError(f'Error from server (NotFound): pods "{name}" not found')
        return pod

    def log_file(self, pod: PodRecord, container: str, *, previous: bool) -> Path:
        statuses = {s.name: s for s in [*pod.init_statuses, *pod.statuses]}
        status = statuses.get(container)
        if status is None:
            raise apiserver.ApiError(
                f"error: container {container} is not valid for pod {pod.name}"
            )
        number = status.restart_count - 1 if previous else status.restart_count
        path = self.paths.pod_dir(pod.uid) / "logs" / container / f"{number}.log"
        if (previous and number < 0) or not path.exists():
            if previous:
                raise apiserver.ApiError(
                    f'Error from server (BadRequest): previous terminated container "{container}" '
                    f'in pod "{pod.name}" not found'
                )
            reason = status.reason or "ContainerCreating"
            raise apiserver.ApiError(
                f'Error from server (BadRequest): container "{container}" in pod "{pod.name}" '
                f"is waiting to start: {reason}"
            )
        return path

    def exec_in_pod(self, pod: PodRecord, container: str, argv: list[str]) -> int:
        """Run a command in a container (its namespaces, mounts, uid, env), attached to this
        terminal; its exit status. Stopping the client stops the command (`attached`)."""
        spec_path = self.paths.pod_dir(pod.uid) / "containers" / f"{container}.json"
        if not spec_path.exists() or not pod.netns:
            raise apiserver.ApiError(
                f'error: unable to upgrade connection: container not found ("{container}")'
            )
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        spec["argv"] = argv
        exec_path = spec_path.with_name(f"{container}.exec-cli-{time.time_ns()}.json")
        exec_path.write_text(json.dumps(spec), encoding="utf-8")
        source_root = str(Path(__file__).resolve().parent.parent.parent)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": source_root,
        }
        try:
            return run_attached(
                [
                    "ip",
                    "netns",
                    "exec",
                    pod.netns,
                    sys.executable,
                    "-m",
                    "sidemesh.local.launch",
                    str(exec_path),
                ],
                env=env,
            )
        finally:
            exec_path.unlink(missing_ok=True)
