"""The monitoring port's debug endpoints (`/debug/syncz` names every proxy's pod, address and
namespace) answer loopback, or a bearer token of the control plane's namespace; `/metrics` and
`/ready` answer anyone. `sidemesh proxy-status` presents such a token in each of its modes."""

from __future__ import annotations

import asyncio
import datetime
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from sidemesh.cli.proxy_status import (
    debug_token,
    fetch_from_cluster,
    local_debug_token,
    proxy_status,
)
from sidemesh.security.authn import LocalTokenAuthenticator, issue_local_token
from sidemesh.xds.monitoring import (
    DEBUG_TOKEN_HEADER,
    MonitoringServer,
    bearer_token,
    debug_access,
    is_loopback,
)

ROWS = [{"pod": "web-abc.demo", "proxy": "sidecar~10.244.0.7~web-abc.demo~demo.svc"}]
PAST = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "tokens.yaml"
    return {
        "path": path,
        "istiod": issue_local_token(path, namespace="istio-system", service_account="default"),
        "workload": issue_local_token(path, namespace="demo", service_account="web"),
        "expired": issue_local_token(
            path, namespace="istio-system", service_account="default", expires=PAST
        ),
    }


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.244.0.1", False), ("192.0.2.2", False), ("::ffff:10.0.0.1", False), ("", False),
     (None, False), ("fe80::1%eth0", False)],
)  # fmt: skip
def test_loopback_peers(peer: str | None, loopback: bool) -> None:
    assert is_loopback(peer) is loopback


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({DEBUG_TOKEN_HEADER.lower(): "xyz"}, "xyz"),
        ({"authorization": "Bearer abc", DEBUG_TOKEN_HEADER.lower(): "xyz"}, "abc"),
        ({}, None),
    ],
)
def test_where_the_token_comes_from(headers: dict[str, str], token: str | None) -> None:
    assert bearer_token(headers) == token


@pytest.mark.parametrize(
    ("peer", "who", "with_authenticator", "reason"),
    [
        ("127.0.0.1", None, False, None),
        ("127.0.0.1", "workload", True, None),  # loopback needs no token, whatever it sends
        ("10.244.0.1", "istiod", True, None),
        ("10.244.0.1", None, False, "debug endpoints answer only on loopback here"),
        ("10.244.0.1", "istiod", False, "debug endpoints answer only on loopback here"),
        ("10.244.0.1", None, True, "debug endpoints need a bearer token"),
        ("10.244.0.1", "guess", True, "token not accepted: unknown token"),
        ("10.244.0.1", "expired", True, "token not accepted: token expired at 2020-01-01"),
        ("10.244.0.1", "workload", True, "service account demo/web may not read debug "
         "endpoints: only service accounts of namespace istio-system may"),
    ],
)  # fmt: skip
async def test_who_may_read_debug_endpoints(
    tokens: dict[str, Any], peer: str, who: str | None, with_authenticator: bool, reason: str | None
) -> None:
    token = None if who is None else tokens.get(who, "x" * 43)
    access = await debug_access(
        peer=peer,
        token=token,
        authenticator=LocalTokenAuthenticator(tokens["path"]) if with_authenticator else None,
        namespace="istio-system",
    )
    assert access.allowed is (reason is None)
    assert reason is None or access.reason.startswith(reason), access.reason


# --- over a socket, from an address that is not loopback ----------------------------------------


def host_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith(("127.", "0.")) else address


@pytest.fixture
async def exposed(tokens: dict[str, Any]) -> AsyncIterator[str]:
    """A monitoring server on a non-loopback address of this host, as istiod's pod serves."""
    address = host_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    server = MonitoringServer(
        metrics=lambda: "pilot_xds 1\n", syncz=lambda: ROWS,
        authenticator=LocalTokenAuthenticator(tokens["path"]),
    )  # fmt: skip
    await server.start(address, 0)
    try:
        yield f"{address}:{server.port}"
    finally:
        await server.stop()


async def get(address: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: istiod\r\n{extra}\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_metrics_and_ready_answer_anyone(exposed: str) -> None:
    assert await get(exposed, "/metrics") == (200, b"pilot_xds 1\n")
    assert await get(exposed, "/ready") == (200, b"ok\n")


async def test_syncz_off_loopback_needs_a_token_of_the_control_planes_namespace(
    exposed: str, tokens: dict[str, Any]
) -> None:
    status, body = await get(exposed, "/debug/syncz")
    assert status == 403 and b"need a bearer token" in body and b"web-abc" not in body
    status, body = await get(exposed, "/debug/syncz?x=1", {"Authorization": "Bearer nope"})
    assert status == 403 and b"web-abc" not in body
    status, body = await get(
        exposed, "/debug/syncz", {"Authorization": f"Bearer {tokens['workload']}"}
    )
    assert status == 403 and b"only service accounts of namespace istio-system" in body
    good = {"Authorization": f"Bearer {tokens['istiod']}"}
    assert await get(exposed, "/debug/syncz", good) == (200, orjson.dumps(ROWS))
    through_api_server = {DEBUG_TOKEN_HEADER: tokens["istiod"]}
    assert await get(exposed, "/debug/syncz", through_api_server) == (200, orjson.dumps(ROWS))


# --- proxy-status presents a token ---------------------------------------------------------------


async def test_address_mode_sends_the_token_file(
    exposed: str, tokens: dict[str, Any], tmp_path: Path
) -> None:
    refused = await asyncio.to_thread(CliRunner().invoke, proxy_status, ["--address", exposed])
    assert refused.exit_code == 1
    assert f"cannot read proxy status from {exposed}: /debug/syncz answered 403" in refused.output
    assert "need a bearer token" in refused.output
    token_file = tmp_path / "token"
    token_file.write_text(tokens["istiod"] + "\n")
    shown = await asyncio.to_thread(
        CliRunner().invoke,
        proxy_status,
        ["--address", exposed, "--token-file", str(token_file), "--json"],
    )
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.output) == ROWS


def test_token_file_is_only_for_an_address(tmp_path: Path) -> None:
    result = CliRunner().invoke(proxy_status, ["--token-file", str(tmp_path / "t")])
    assert result.exit_code == 2 and "--token-file is for --address" in result.output


class TokenCluster:
    """A lightkube AsyncClient's calls proxy-status makes: TokenRequest, list pods, GET."""

    def __init__(self, *, may_mint: bool) -> None:
        self.may_mint = may_mint
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self._client = SimpleNamespace(_client=self)

    async def create(self, request: Any, *, name: str, namespace: str) -> Any:
        if not self.may_mint:
            raise PermissionError('serviceaccounts "default" is forbidden')
        self.requests.append((request, name, namespace))
        return SimpleNamespace(status=SimpleNamespace(token="minted"))

    async def list(self, resource: Any, **query: Any) -> AsyncIterator[dict[str, Any]]:
        yield {
            "metadata": {"name": "istiod-a", "namespace": "istio-system"},
            "status": {"phase": "Running", "podIP": "10.1.0.9"},
        }

    async def get(self, path: str, headers: dict[str, str]) -> Any:
        self.headers.append(headers)
        return SimpleNamespace(status_code=200, content=orjson.dumps(ROWS), text="")


async def test_cluster_mode_mints_a_token_and_sends_it_through_the_api_server() -> None:
    client = TokenCluster(may_mint=True)
    token = await debug_token(client, "istio-system")
    assert token == "minted"
    [(request, name, namespace)] = client.requests
    assert (name, namespace) == ("default", "istio-system")
    assert request.spec.audiences == ["istio-ca"] and request.spec.expirationSeconds == 600
    rows = await fetch_from_cluster(client, namespace="istio-system", revision=None, token=token)
    assert rows == ROWS
    assert client.headers == [{DEBUG_TOKEN_HEADER: "minted"}]  # Authorization is the API's


async def test_cluster_mode_without_permission_to_mint_asks_anyway_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await debug_token(TokenCluster(may_mint=False), "istio-system") is None
    assert "cannot get a token of serviceaccount istio-system/default" in capsys.readouterr().err


def test_local_mode_token_is_the_runtimes_for_the_control_plane_namespace(
    tmp_path: Path,
) -> None:
    token = local_debug_token(tmp_path)
    assert local_debug_token(tmp_path) == token  # issued once, then reused
    authenticator = LocalTokenAuthenticator(tmp_path / "tokens" / "tokens.yaml")
    caller = asyncio.run(authenticator.authenticate(token))
    assert (caller.namespace, caller.service_account) == ("istio-system", "default")
