"""The demo's authorization step, as data (pure): a third workload with an identity of its own
(`guest`), the AuthorizationPolicy that lets only the app's own callers reach the backend, and
a request program that prints the HTTP status (Envoy's 403 is an answer, not an error).

The policy names the client's identity, the one the demo shows allowed, and the frontend's:
the app's own path (client -> frontend -> backend) keeps working while the policy is in force,
so the golden signals read afterwards show no failures the demo caused. The guest, with its
own service account, is the in-mesh caller the policy refuses.
"""

from __future__ import annotations

import re
from typing import Any, Final

from sidemesh.demo.script import NAMESPACE, Command

GUEST: Final = "guest"
BACKEND: Final = "backend"
POLICY_NAME: Final = "backend-callers"
ALLOWED_ACCOUNTS: Final = ("client", "frontend")
DENIED: Final = 403
ALLOWED: Final = 200
DENIED_BODY: Final = "RBAC: access denied"  # Envoy's RBAC filter's local reply

# `python3 -c STATUS_FETCH URL` in a container: the body, then a line `HTTP <status>`, for any
# status (urllib raises on 4xx/5xx; an error processor that passes responses through does not).
# curl's `-w '\nHTTP %{http_code}\n'` prints the same two parts.
STATUS_FETCH: Final = (
    "import sys, urllib.request as u; "
    "P = type('P', (u.HTTPErrorProcessor,), {'http_response': lambda s, q, r: r}); "
    "r = u.build_opener(P).open(sys.argv[1], timeout=5); "
    "print(r.read().decode().strip()); print('HTTP', r.status)"
)
CURL_STATUS: Final = "\\nHTTP %{http_code}\\n"
_STATUS_LINE: Final = re.compile(r"^HTTP (\d{3})$")


def principal(account: str, namespace: str = NAMESPACE) -> str:
    """An identity as AuthorizationPolicy names it (the SPIFFE id without `spiffe://`)."""
    return f"cluster.local/ns/{namespace}/sa/{account}"


def rule_name(namespace: str = NAMESPACE) -> str:
    """The name Istio gives `backend_policy`'s one rule in the sidecar's RBAC filter: its
    presence in the backend's Envoy configuration is the policy having arrived there."""
    return f"ns[{namespace}]-policy[{POLICY_NAME}]-rule[0]"


def backend_policy(namespace: str = NAMESPACE) -> dict[str, Any]:
    """ALLOW on the backend's pods, from the client's and the frontend's identities only."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": BACKEND}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": [principal(a, namespace) for a in ALLOWED_ACCOUNTS]
                            }
                        }
                    ]
                }
            ],
        },
    }


def guest_objects(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """A service account and a bare pod using it: in the mesh (the namespace is labelled, so
    it gets a sidecar and the identity `.../sa/guest`), but not one the policy names."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": GUEST, "namespace": namespace},
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": GUEST, "namespace": namespace, "labels": {"app": GUEST}},
            "spec": {
                "serviceAccountName": GUEST,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": GUEST,
                        "image": "python:3.12-slim",
                        "command": ["python3", "-c", "import time; time.sleep(10**9)"],
                    }
                ],
            },
        },
    ]


def status_command(namespace: str, pod: str, url: str, container: str = "client") -> Command:
    """A request from a pod's container that shows the status whatever it is."""
    exec_args = ("exec", "-n", namespace, pod, "-c", container, "--")
    return Command(
        local_args=(*exec_args, "python3", "-c", STATUS_FETCH, url),
        kubectl_args=(*exec_args, "curl", "-s", "-w", CURL_STATUS, url),
    )


def status_in(output: str) -> int | None:
    """The status line `status_command` ends with (None: no answer, e.g. a reset)."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    found = _STATUS_LINE.match(lines[-1]) if lines else None
    return int(found.group(1)) if found else None


def body_in(output: str) -> str:
    """What `status_command` printed before its status line."""
    lines = output.strip().splitlines()
    if lines and _STATUS_LINE.match(lines[-1].strip()):
        lines = lines[:-1]
    return "\n".join(lines).strip()


def denial_problem(status: int | None, body: str) -> str | None:
    """Why an answer is not the policy's refusal (None: it is)."""
    if status != DENIED:
        return f"expected HTTP {DENIED} from the backend's sidecar, got {status}: {body!r}"
    if body != DENIED_BODY:
        return f"HTTP {DENIED}, but not the RBAC refusal ({DENIED_BODY!r}): {body!r}"
    return None
