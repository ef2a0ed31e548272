"""Run an ASGI app over HTTPS with uvicorn, serving our own hot-reloadable SSLContext.

uvicorn normally builds its SSLContext from file names, once. It also accepts an
`ssl_context_factory`, called from `Config.load()`; ours ignores uvicorn's default factory and
returns the context the CertificateReloader keeps up to date, so the listening socket and the
reloader share one context and rotation needs nothing from uvicorn.

uvicorn's own signal handling re-raises SIGTERM/SIGINT after its graceful shutdown (so the
process dies of the signal); a webhook Deployment should exit 0 when asked to stop, so the
server here handles the signals itself: stop accepting, let in-flight requests finish, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import uvicorn

from sidemesh.webhook.tls import CertificateReloader, build_server_context

# The API server keeps webhook connections open between admissions (its client's idle timeout
# is 90 s); staying open longer than the client means the server never closes a connection
# the client is about to reuse.
KEEP_ALIVE_SECONDS: Final = 120
# Admissions take milliseconds; this only bounds a stuck client at shutdown.
GRACEFUL_SHUTDOWN_SECONDS: Final = 15

ASGIApp = Callable[..., Any]


class _Server(uvicorn.Server):
    """uvicorn.Server that exits normally after SIGTERM/SIGINT instead of re-raising them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled on the main thread (e.g. in tests)
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def make_config(app: ASGIApp, *, host: str, port: int, context: ssl.SSLContext) -> uvicorn.Config:
    """The uvicorn configuration the webhook (and its benchmark floor) runs with."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        interface="asgi3",
        access_log=False,
        log_config=None,  # keep the process's logging setup
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ssl_context_factory=lambda _config, _default_factory: context,
    )


def serve_https(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    context: ssl.SSLContext | None = None,
) -> None:
    """Serve `app` until SIGTERM/SIGINT, reloading the certificate when its files change.

    `context` is the already-built serving context (so callers can report a bad pair before
    anything binds); it is built from the files when omitted.
    """
    if context is None:
        context = build_server_context(cert_file, key_file)
    reloader = CertificateReloader(context, cert_file, key_file)
    config = make_config(app, host=host, port=port, context=context)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve(_Server(config), reloader))


async def _serve(server: uvicorn.Server, reloader: CertificateReloader) -> None:
    reload_task = asyncio.create_task(reloader.run(), name="tls-certificate-reloader")
    try:
        await server.serve()
    finally:
        reload_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reload_task
