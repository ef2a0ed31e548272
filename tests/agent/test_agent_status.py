"""The status server (15020): routes, readiness reasons, app probes, merged metrics, quit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_testkit import assert_valid_text_format
from local_servers import HttpBehaviour, closed_port, http_server, tcp_server

from sidemesh.agent import http
from sidemesh.agent.metrics import AgentMetrics, AppMetricsTarget
from sidemesh.agent.prober import Prober
from sidemesh.agent.probes import AppProbe, TcpProbe
from sidemesh.agent.status import AgentState, StatusApp, StatusServer

READY_STATS = (
    b"cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_success: 1\n"
    b"listener_manager.workers_started: 1\nserver.state: 0\n"
)


def _app(
    *,
    admin_port: int,
    probes: dict[str, AppProbe] | None = None,
    app_metrics: AppMetricsTarget | None = None,
    has_certificate: bool = True,
    on_quit: Callable[[], None] = lambda: None,
) -> tuple[StatusApp, AgentState, AgentMetrics]:
    metrics = AgentMetrics()
    state = AgentState(has_certificate=lambda: has_certificate)
    app = StatusApp(
        state=state,
        prober=Prober(probes or {}, default_host="127.0.0.1", metrics=metrics),
        metrics=metrics,
        admin=("127.0.0.1", admin_port),
        app_metrics=app_metrics,
        app_host="127.0.0.1",
        on_quit=on_quit,
    )
    return app, state, metrics


async def call(
    app: StatusApp, path: str, method: str = "GET", client: str = "127.0.0.1"
) -> tuple[int, str, dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "client": (client, 50000)}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], sent[1]["body"].decode(), headers


async def test_ready_only_when_envoy_and_agent_are() -> None:
    async with http_server(HttpBehaviour(body=READY_STATS)) as admin:
        app, state, _ = _app(admin_port=admin)
        assert (await call(app, "/healthz/ready"))[:2] == (200, "ready\n")
        state.draining = True
        status, body, _ = await call(app, "/healthz/ready")
        assert (status, body) == (503, "the agent is draining\n")
    no_cert, _, _ = _app(admin_port=admin, has_certificate=False)
    assert (await call(no_cert, "/healthz/ready"))[:2] == (503, "no workload certificate yet\n")
    unreachable, _, _ = _app(admin_port=closed_port())
    status, body, _ = await call(unreachable, "/healthz/ready")
    assert status == 503 and "Envoy admin unreachable" in body


async def test_not_ready_until_configuration_arrived() -> None:
    stats = READY_STATS.replace(b"lds.update_success: 1", b"lds.update_success: 0")
    async with http_server(HttpBehaviour(body=stats)) as admin:
        app, _, _ = _app(admin_port=admin)
        status, body, _ = await call(app, "/healthz/ready")
    assert status == 503 and "LDS" in body


async def test_app_health_runs_the_original_probe() -> None:
    async with tcp_server() as port:
        probes = {
            "/app-health/web/livez": AppProbe(TcpProbe(port=port)),
            "/app-health/web/readyz": AppProbe(TcpProbe(port=closed_port())),
        }
        app, _, metrics = _app(admin_port=closed_port(), probes=probes)
        assert (await call(app, "/app-health/web/livez"))[0] == 200
        assert (await call(app, "/app-health/web/readyz"))[0] == 500
        assert (await call(app, "/app-health/web/startupz"))[0] == 404
        assert (await call(app, "/app-health/other/livez"))[0] == 404
    assert metrics.probe_results[("/app-health/web/readyz", "failure")] == 1


async def test_unknown_paths_and_methods() -> None:
    app, _, _ = _app(admin_port=closed_port())
    assert (await call(app, "/nope"))[0] == 404
    assert (await call(app, "/healthz/ready", method="POST"))[0] == 405


async def test_quitquitquit_is_post_from_loopback_only() -> None:
    quits: list[bool] = []
    app, _, _ = _app(admin_port=closed_port(), on_quit=lambda: quits.append(True))
    assert (await call(app, "/quitquitquit"))[0] == 405
    assert (await call(app, "/quitquitquit", method="POST", client="10.1.2.3"))[0] == 403
    assert quits == []
    assert (await call(app, "/quitquitquit", method="POST", client="::1"))[0] == 200
    assert quits == [True]


async def test_metrics_merge_envoy_app_and_agent() -> None:
    envoy = HttpBehaviour(body=b"# TYPE envoy_server_live gauge\nenvoy_server_live 1\n")
    app_metrics = HttpBehaviour(body=b"# TYPE app_hits counter\napp_hits_total 7\n# EOF\n")
    async with http_server(envoy) as admin, http_server(app_metrics) as app_port:
        app, _, _ = _app(admin_port=admin, app_metrics=AppMetricsTarget(app_port, "/metrics"))
        status, body, headers = await call(app, "/stats/prometheus")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_valid_text_format(body)
    assert "envoy_server_live 1" in body
    assert "app_hits_total 7" in body
    assert "sidemesh_agent_cert_renewals_total 0" in body
    assert envoy.requests[0].path == "/stats/prometheus"
    assert app_metrics.requests[0].path == "/metrics"
    assert "text/plain" in app_metrics.requests[0].headers["accept"]


async def test_metrics_still_served_when_sources_fail() -> None:
    app, _, _ = _app(admin_port=closed_port(), app_metrics=AppMetricsTarget(closed_port()))
    status, body, _ = await call(app, "/stats/prometheus")
    assert status == 200
    assert_valid_text_format(body)
    assert "sidemesh_agent_cert_renewals_total" in body


async def test_status_server_over_tcp() -> None:
    from fake_control_plane import free_port

    app, _, _ = _app(admin_port=closed_port())
    port = free_port()
    server = StatusServer(app, host="127.0.0.1", port=port)
    await server.start()
    try:
        response = await http.fetch("127.0.0.1", port, "/healthz/ready")
        assert response.status == 503
        assert (await http.fetch("127.0.0.1", port, "/nope")).status == 404
        second = StatusServer(app, host="127.0.0.1", port=port)
        try:
            await second.start()
        except OSError:
            pass  # the port is taken: an ordinary error at startup, not a hang
        else:
            raise AssertionError("a second server bound the same port")
    finally:
        await server.stop()
