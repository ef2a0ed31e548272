"""The small parsers: durations, addresses, log levels, downwardAPI files."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidemesh.agent.parsing import (
    parse_agent_log_level,
    parse_downward_api_file,
    parse_duration,
    split_host_port,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("1h", 3600),
        ("2.5", 2.5),
        ("0s", 0),
        ("1h0m0s", 3600),
        ("1.5m", 90),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "1m 30s", "-1s", "m5", "-3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6))
def test_go_durations_round_trip(seconds: int) -> None:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    assert parse_duration(f"{hours}h{minutes}m{secs}s") == seconds


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("istiod.istio-system.svc:15012", ("istiod.istio-system.svc", 15012)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[fd00::1]:15012", ("fd00::1", 15012)),
    ],
)
def test_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected


@pytest.mark.parametrize("address", ["istiod", "istiod:", ":15012", "h:99999", "fd00::1:15012"])
def test_bad_host_port(address: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(address)


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("default:info", logging.INFO),
        ("warn", logging.WARNING),
        ("ads:debug,default:error", logging.ERROR),
        ("default:debug", logging.DEBUG),
    ],
)
def test_agent_log_levels(text: str, level: int) -> None:
    assert parse_agent_log_level(text) == level


def test_downward_api_file() -> None:
    text = 'app="web"\nempty=""\nquoted="a \\"b\\" \\\\ c"\n\nbroken\n'
    assert parse_downward_api_file(text) == {"app": "web", "empty": "", "quoted": 'a "b" \\ c'}
