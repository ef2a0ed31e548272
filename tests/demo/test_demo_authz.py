"""The demo's authorization step as data: valid objects, the policy naming the identities it
means, and the request program's status read back."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest

from sidemesh.api import security
from sidemesh.demo import demo_authz as authz


def test_the_guest_is_valid_kubernetes_with_its_own_service_account() -> None:
    account, pod = authz.guest_objects()
    for document in (account, pod):
        kubernetes_validate.validate(document, "1.30", strict=True)
        assert document["metadata"]["namespace"] == "demo"
    assert account["kind"] == "ServiceAccount"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"] == "guest"
    assert "guest" not in authz.ALLOWED_ACCOUNTS


def test_the_policy_allows_only_the_client_and_the_frontend_on_the_backend() -> None:
    policy = authz.backend_policy()
    resource = security.validate(policy)  # the one validation path `local apply` uses
    assert resource.name == authz.POLICY_NAME
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"]["action"] == "ALLOW"
    assert policy["spec"]["selector"] == {"matchLabels": {"app": "backend"}}
    [rule] = policy["spec"]["rules"]
    assert rule == {
        "from": [
            {
                "source": {
                    "principals": [
                        "cluster.local/ns/demo/sa/client",
                        "cluster.local/ns/demo/sa/frontend",
                    ]
                }
            }
        ]
    }


def test_the_request_is_curl_in_the_guide_and_python_here() -> None:
    command = authz.status_command("demo", "guest", "http://backend.demo/", "guest")
    assert command.kubectl == (
        "kubectl exec -n demo guest -c guest -- curl -s -w '\\nHTTP %{http_code}\\n' "
        "http://backend.demo/"
    )
    assert command.local_args[-4:] == ("python3", "-c", authz.STATUS_FETCH, "http://backend.demo/")


@pytest.mark.parametrize(
    ("output", "status", "body"),
    [
        ("RBAC: access denied\nHTTP 403\n", 403, "RBAC: access denied"),
        ('{"caller": "spiffe://x"}\nHTTP 200\n', 200, '{"caller": "spiffe://x"}'),
        ("\nHTTP 503\n\n", 503, ""),
        ("Traceback ...\nConnectionResetError: reset\n", None,
         "Traceback ...\nConnectionResetError: reset"),
        ("HTTP 2000\n", None, "HTTP 2000"),
        ("", None, ""),
    ],
)  # fmt: skip
def test_status_and_body_are_read_back(output: str, status: int | None, body: str) -> None:
    assert authz.status_in(output) == status
    assert authz.body_in(output) == body


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (403, "RBAC: access denied", True),
        (403, "forbidden by the app", False),  # a 403, but not the sidecar's RBAC
        (200, '{"caller": null}', False),
        (None, "", False),
    ],
)
def test_only_the_sidecars_rbac_refusal_counts_as_the_denial(
    status: int | None, body: str, refused: bool
) -> None:
    assert (authz.denial_problem(status, body) is None) is refused


def test_the_request_program_prints_the_status_of_an_error_answer() -> None:
    """STATUS_FETCH itself, against a local server answering 403 (urllib would raise)."""
    server = (
        "import http.server, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = b'RBAC: access denied'\n"
        "        self.send_response(403); self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers(); self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        "print(s.server_port, flush=True)\n"
        "s.handle_request()\n"
    )
    with subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        port = p.stdout.readline().strip()
        fetched = subprocess.run(
            [sys.executable, "-c", authz.STATUS_FETCH, f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        p.wait(timeout=30)
    assert fetched.returncode == 0, fetched.stderr
    assert authz.status_in(fetched.stdout) == 403
    assert authz.body_in(fetched.stdout) == "RBAC: access denied"
