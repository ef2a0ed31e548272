"""One ADS stream: who is on it (the proxy, the authenticated caller and the identity it may
act as) and, per resource type, what it subscribed to, was sent and ACKed (`TypeState`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sidemesh.security.identity import SpiffeId
from sidemesh.xds.authn import XdsCaller
from sidemesh.xds.proxy import ProxyInfo
from sidemesh.xds.responses import TypeState


@dataclass(eq=False)
class Connection:
    id: str
    delta: bool
    context: Any
    proxy: ProxyInfo | None = None
    caller: XdsCaller | None = None  # None: the plaintext port, nobody authenticated
    identity: SpiffeId | None = None  # who the proxy was allowed to act as
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
