"""Running the HTTP server process: uvicorn with driftgate's shutdown semantics.

On SIGTERM or SIGINT: readiness fails at once (``Gateway.drain``), the listening socket
closes, requests already accepted run to the end (bounded by ``drain_seconds``), and the
process exits 0. That is what Kubernetes expects of a pod being replaced.

A second SIGTERM during the drain ends it at once (for a worker: ``END_DRAIN`` from its
supervisor, ``gateway.processes``); so does the drain bound. Either way a request still being
answered is not left to uvicorn, which would cancel it into a plain-text 500 and a
traceback in the log: it is answered 503 problem+json (``ShuttingDownError``), with
``Connection: close``.

With ``workers > 1`` the command line runs a supervisor instead (``gateway.workers``): it
binds the socket and runs this same server in each worker process, on that socket. With one
worker (the default) nothing of that exists: this process is the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import uvicorn

from gateway.config import Settings
from gateway.errors import ShuttingDownError
from gateway.http.app import create_app
from gateway.http.problems import problem_parts
from gateway.http.protocol import deadline_protocol
from gateway.lifecycle import Gateway
from gateway.listeners import open_listeners
from gateway.processes import END_DRAIN, announce_listening, configure_logging
from gateway.tracing import tracer_from_environ

if TYPE_CHECKING:
    from gateway.monitoring.fleet import WorkerContext

__all__ = ["serve"]

log = logging.getLogger("driftgate")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CUT_SECONDS = 1.0
"""How long the requests cut by a forced end of the drain get to send their 503."""


class _AnswerCut:
    """The ASGI app as uvicorn runs it, but a request cancelled because the server is ending
    (a forced end of the drain, or its bound) is answered 503 problem+json instead of
    reaching uvicorn as an exception (a text 500 and a traceback). Costs one ``try`` a request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] != "http" or not self.gateway.draining:
                raise
            await self._refuse(scope, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send) -> None:
        exc = ShuttingDownError("the server is shutting down and could not finish this request; send it again")
        status, body, headers = problem_parts(exc, scope.get("path", ""))
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"connection", b"close"),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
        }
        # RuntimeError: the answer had begun (uvicorn takes no second start); it closes the
        # connection. TimeoutError: the client does not read; the process is ending anyway.
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            await asyncio.wait_for(send(start), CUT_SECONDS)
            await asyncio.wait_for(send({"type": "http.response.body", "body": body}), CUT_SECONDS)


class _DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        gateway: Gateway,
        on_started: Callable[[], None] | None = None,
        *,
        supervised: bool = False,
    ) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.on_started = on_started
        self.supervised = supervised
        """A worker of several: it waits for its models before it serves, and only its
        supervisor ends its drain early (``gateway.processes``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.supervised:
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
        if self.should_exit and self.supervised:
            return  # the group's copy of the signal the supervisor passed on, or the reverse
        if self.should_exit and sig == signal.SIGTERM:
            # a second SIGTERM while draining (uvicorn only cuts the drain on a second SIGINT):
            # the operator wants the process gone now; open requests are answered 503
            log.warning("second SIGTERM: ending the drain now")
            self.force_exit = True
        self.gateway.drain()
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises captured signals after a graceful shutdown, so the process
            # would die by SIGTERM (exit 143). A drained sidecar exits 0, as Kubernetes expects.
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]

    def end_drain(self, sig: int, frame: Any) -> None:
        """``END_DRAIN`` from the supervisor: an operator signalled it a second time."""
        log.warning("the supervisor was signalled again: ending the drain now")
        self.gateway.drain()
        self.should_exit = self.force_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        # A forced end leaves the requests still running to the event loop's end, the drain
        # bound has cancelled them and gone on: either way they are cut here, while the loop
        # still runs, so each sends its 503 (``_AnswerCut``) before the process ends.
        tasks = list(self.server_state.tasks)
        if tasks:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=CUT_SECONDS)
        if self.force_exit:
            # uvicorn skips the app's shutdown when forced, and the loop's end then cancels
            # the lifespan task into a traceback; it is quick (a worker's last publication)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lifespan.shutdown(), CUT_SECONDS)


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

    ``worker``, ``sockets`` and ``on_started`` are how a supervisor (``gateway.workers``)
    runs one of its workers: on its socket, with its slot of the state folder, telling it
    once it is serving.
    """
    configure_logging(settings, None if worker is None else worker.index)
    if sockets is None and settings.admin_port is not None:
        try:  # two listeners: bound here, as the supervisor binds them for its workers
            settings, sockets = open_listeners(settings)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 3
        announce_listening(log, settings)
    if worker is None or worker.index == 0:
        log.info("%s", startup_line(settings))
    tracer = tracer_from_environ()
    gateway = Gateway(settings, worker, tracer)
    app = create_app(settings, gateway)
    config = uvicorn.Config(
        _AnswerCut(app, gateway),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to the one handler of ``gateway.logs``
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
    server = _DrainingServer(config, gateway, on_started, supervised=worker is not None)
    if worker is not None:
        signal.signal(END_DRAIN, server.end_drain)
    server.run(sockets=sockets)
    if tracer is not None:
        tracer.shutdown()  # the spans of the last requests
    return 0 if server.started else 3
