"""Headless Chromium driven over the Chrome DevTools Protocol (a WebSocket, spoken with aiohttp:
no webdriver, no browser download; works offline with Debian's /usr/bin/chromium)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from async_waits import eventually

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1400,1000",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 60.0


class Chromium:
    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.socket: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        assert CHROMIUM is not None
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.profile.parent / "chromium.log", "wb")  # noqa: SIM115 (kept while it runs)
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        active = self.profile / "DevToolsActivePort"

        def port_written() -> int | None:
            assert self.process is not None
            assert self.process.poll() is None, "chromium exited; see chromium.log"
            lines = active.read_text().splitlines() if active.exists() else []
            return int(lines[0]) if len(lines) >= 2 and lines[0].isdigit() else None

        port = await eventually(port_written, START_TIMEOUT)
        self.session = aiohttp.ClientSession()

        async def page_socket() -> str | None:
            assert self.session is not None
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            pages = [t for t in targets if t.get("type") == "page"]
            return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

        url = await eventually(page_socket, START_TIMEOUT)
        self.socket = await self.session.ws_connect(url, max_msg_size=64 * 1024 * 1024)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.session is not None:
            await self.session.close()
        if self.process is not None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 30)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self.socket is not None
        ident = next(self._ids)
        await self.socket.send_str(
            json.dumps({"id": ident, "method": method, "params": params or {}})
        )
        while True:
            message = await asyncio.wait_for(self.socket.receive(), 60)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            answer = json.loads(message.data)
            if answer.get("id") == ident:  # anything else is an event
                assert "error" not in answer, answer["error"]
                return answer["result"]

    async def navigate(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        with contextlib.suppress(KeyError):
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(result["data"]))
        return path
