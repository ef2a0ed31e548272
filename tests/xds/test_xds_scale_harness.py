"""`benchmarks/xds_scale.py` at a tiny size: it completes, every simulated proxy gets each
change, and every proxy ends SYNCED on the server — over SotW and Delta, connected in waves."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def xds_scale(monkeypatch: pytest.MonkeyPatch) -> Any:
    # The client processes are spawned: they find the benchmark's modules on the path they
    # inherit from this process.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import xds_scale

    return xds_scale


def options(**overrides: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "services": 20, "proxies": 20, "client_processes": 2, "rounds": 0,
        "service_rounds": 0, "virtual_service_rounds": 1, "timeout": 60.0,
        "protocols": "sotw,delta", "wave_size": 7, "memory_limit_mb": 4000.0,
        "sotw_listener_rounds": None,
    }  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


async def test_one_virtual_service_round_reaches_every_proxy_over_both_protocols(
    xds_scale: Any,
) -> None:
    result = await xds_scale.run_all(options())
    for protocol in ("sotw", "delta"):
        run = result[protocol]
        assert run["waves"] == 3  # 7 + 7 + 6 proxies, each wave synced before the next
        assert run["proxies_synced"] == 20
        round_ = run["virtual_service"]
        assert round_["rounds"] == 1
        assert round_["proxies_missed"] == 0
        assert round_["proxy_p99_s"] <= round_["proxy_max_s"]
        assert run["proxies_synced_at_end"] == 20
        assert run["client_stream_retries"] == 0
    # Delta sends the one changed listener; SotW every listener of the proxy.
    assert (
        result["delta"]["virtual_service"]["response_bytes_p50"]
        < (result["sotw"]["virtual_service"]["response_bytes_p50"])
    )
    routes = result["route_config_bytes_per_proxy"]
    assert 0 < routes["sidecar_own_namespace"] < routes["all_services"]


def test_a_response_is_summarised_from_its_top_level_fields(xds_scale: Any) -> None:
    from envoy.service.discovery.v3 import discovery_pb2
    from google.protobuf import any_pb2
    from xds_scale_clients import LDS, summarize

    sotw = discovery_pb2.DiscoveryResponse(
        version_info="v1", type_url=LDS, nonce="7",
        resources=[any_pb2.Any(type_url=LDS, value=b"") for _ in range(3)],
    )  # fmt: skip
    sotw.control_plane.identifier = "cp"
    type_url, last = summarize(sotw.SerializeToString(), delta=False)
    assert (type_url, last.version, last.nonce, last.resources, last.removed) == (
        LDS, "v1", "7", 3, 0)  # fmt: skip
    delta = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="s", type_url=LDS, nonce="8", removed_resources=["a", "b"],
        resources=[discovery_pb2.Resource(name="x", version="1")],
    )  # fmt: skip
    type_url, last = summarize(delta.SerializeToString(), delta=True)
    assert (type_url, last.nonce, last.resources, last.removed) == (LDS, "8", 1, 2)
    assert last.size == delta.ByteSize()
