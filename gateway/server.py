"""Running the HTTP server process: uvicorn with driftgate's shutdown semantics.

On SIGTERM or SIGINT: readiness fails at once (``Gateway.drain``), the listening socket
closes, requests already accepted run to the end (bounded by ``drain_seconds``), and the
process exits 0. That is what Kubernetes expects of a pod being replaced.

With ``workers > 1`` the process is a supervisor instead (``gateway.workers``): it binds
the socket and runs this same server in each worker process, on that socket. With one
worker (the default) nothing of that exists: this process is the server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from gateway.config import Settings
from gateway.http.app import create_app
from gateway.http.protocol import deadline_protocol
from gateway.lifecycle import Gateway
from gateway.listeners import open_listeners, url_host

if TYPE_CHECKING:
    from gateway.monitoring.fleet import WorkerContext

__all__ = ["serve"]


class _DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        gateway: Gateway,
        on_started: Callable[[], None] | None = None,
        *,
        wait_for_models: bool = False,
    ) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.on_started = on_started
        self.wait_for_models = wait_for_models

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.wait_for_models:
            # A worker of several takes no connection before its models are loaded: its
            # siblings serve meanwhile, where it would answer 404 (a single server answers
            # its readiness probe 503 instead, and gets no traffic until ready).
            self.gateway.start()  # the app's lifespan start is then a no-op
            while not self.gateway.loaded.is_set() and not self.should_exit:
                await asyncio.sleep(0.02)
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.should_exit and sig == signal.SIGTERM:
            # a second SIGTERM while draining (uvicorn only cuts the drain on a second SIGINT):
            # the operator wants the process gone now; open requests are abandoned
            logging.getLogger("driftgate").warning("second SIGTERM: ending the drain now")
            self.force_exit = True
        self.gateway.drain()
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die by SIGTERM (exit 143). A drained sidecar exits 0, as Kubernetes expects.
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def startup_line(settings: Settings) -> str:
    """One line with the effective limits and the library versions, logged at start so an
    operator (or a bug report) sees what this process actually enforces."""
    from importlib.metadata import version

    import msgspec
    import numpy
    import onnxruntime

    from gateway import __version__

    s = settings
    admin = "off" if not s.admin_token else "on" if s.admin_port is None else f"on, listener port {s.admin_port}"
    return (
        f"driftgate {__version__}: max_body_bytes={s.max_body_bytes} max_batch_rows={s.max_batch_rows} "
        f"max_body_bytes_in_flight={s.body_budget} "
        f"max_concurrency={s.max_concurrency} request_timeout={s.request_timeout_seconds:g}s "
        f"header_timeout={s.header_timeout_seconds:g}s body_timeout={s.body_timeout_seconds:g}s "
        f"drain={s.drain_seconds:g}s batching={s.batching or 'off'} workers={s.workers} "
        f"guards={'on' if s.guards else 'OFF'} monitoring={'on' if s.monitoring else 'OFF'} "
        f"admin={admin}; onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}, "
        f"litestar {version('litestar')}, msgspec {msgspec.__version__}, uvicorn {uvicorn.__version__}"
    )


def serve(
    settings: Settings,
    *,
    worker: WorkerContext | None = None,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit code.

    ``settings.workers > 1``: supervise that many worker processes (``gateway.workers``).
    ``worker``, ``sockets`` and ``on_started`` are how the supervisor runs one of them: on
    its socket, with its slot of the state folder, telling it once it is serving.
    """
    if settings.workers > 1 and worker is None:
        from gateway.workers import supervise

        return supervise(settings)
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if sockets is None and settings.admin_port is not None:
        try:  # two listeners: bound here, as the supervisor binds them for its workers
            settings, sockets = open_listeners(settings)
        except OSError as exc:
            logging.getLogger("driftgate").error("cannot listen: %s", exc)
            return 3
        # uvicorn logs its "running on" line only for sockets it binds itself; scripts read it
        logging.getLogger("driftgate").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", url_host(settings.host), settings.port
        )
    if worker is None or worker.index == 0:
        logging.getLogger("driftgate").info("%s", startup_line(settings))
    gateway = Gateway(settings, worker)
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
        http=deadline_protocol(
            settings.header_timeout_seconds,
            settings.body_timeout_seconds,
            direct=app,
            body_budget=settings.body_budget,
        ),
    )
    server = _DrainingServer(config, gateway, on_started, wait_for_models=worker is not None)
    server.run(sockets=sockets)
    return 0 if server.started else 3
