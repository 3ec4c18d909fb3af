"""Running the HTTP server process: uvicorn with driftgate's shutdown semantics.

On SIGTERM or SIGINT: readiness fails at once (``Gateway.drain``), the listening socket
closes, requests already accepted run to the end (bounded by ``drain_seconds``), and the
process exits 0. That is what Kubernetes expects of a pod being replaced.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import uvicorn

from gateway.config import Settings
from gateway.http.app import create_app
from gateway.http.protocol import deadline_protocol
from gateway.lifecycle import Gateway

__all__ = ["serve"]


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.gateway.drain()
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die by SIGTERM (exit 143). A drained sidecar exits 0, as Kubernetes expects.
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    gateway = Gateway(settings)
    app = create_app(settings, gateway)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        # uvicorn types this as int but waits with asyncio.wait_for, which takes seconds as a
        # float; 0 must still be a bound (uvicorn reads a falsy value as "wait forever").
        timeout_graceful_shutdown=max(settings.drain_seconds, 0.001),  # type: ignore[arg-type]
        server_header=False,
        http=deadline_protocol(settings.header_timeout_seconds, settings.body_timeout_seconds),
    )
    server = _DrainingServer(config, gateway)
    server.run()
    return 0 if server.started else 3
