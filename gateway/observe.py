"""What a prediction request leaves behind besides its count: an access log line, a trace.

Both are off by default, and then nothing of this module runs: the gateway's dispatcher is
the plain ``gateway.dispatch.Dispatcher``. With ``--access-log`` or tracing on
(``gateway.tracing``) it is an ``ObservedDispatcher``: the same dispatcher, which also
notes when each request arrived and, once it is answered, what became of it
(``Finished``). The notes are turned into log lines and spans on the event loop's next turn
(``loop.call_soon``), after the answer of the direct path has been written, all the notes
of one turn at once: a request's answer never waits for its own log line or spans.

The access log (logger ``driftgate.access``) has one line per prediction request, answered
or refused, with the fields ``model``, ``version`` (the one that answered, or would have),
``status`` (HTTP), ``reason`` (as counted in ``driftgate_requests_total``), ``rows``,
``duration`` (seconds, from the request reaching the dispatcher to its answer encoded) and,
when it was traced, ``trace_id``. In text: ``v1 penguins version 1: 200 ok, 1 rows in 0.412 ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from gateway.dispatch import Dispatcher
from gateway.errors import GatewayError, ShuttingDownError
from gateway.monitoring.requests import UNKNOWN_MODEL, reason_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from gateway.codecs import Answer, Codec, Headers
    from gateway.lifecycle import Gateway
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.table import Columns
    from gateway.tracing import RequestTracer

__all__ = ["Finished", "ObservedDispatcher"]

access = logging.getLogger("driftgate.access")
log = logging.getLogger("driftgate")

CLIENT_GONE = 499
"""The status noted for a request whose client went away before its answer (nginx's)."""


class Finished:
    """One prediction request, answered or failed: what its log line and spans are made of."""

    __slots__ = ("detail", "ended", "headers", "model", "protocol", "reason", "rows", "stages", "started", "status", "version")

    def __init__(self, protocol: str, headers: Headers, started: float) -> None:
        self.protocol = protocol
        """The codec's name: ``v1`` or ``v2``."""
        self.headers = headers
        self.started = started
        self.ended = time.perf_counter()
        """``time.perf_counter()`` at arrival and at the end (the answer encoded)."""
        self.model = UNKNOWN_MODEL
        self.version = ""
        self.status = 200
        self.reason = "ok"
        self.detail = ""
        """The error's message, for a failure."""
        self.rows = 0
        self.stages: tuple[float, float, float, float, float] | None = None
        """The stages' timestamps (``Outcome.stages``) of a predicted request."""


class ObservedDispatcher(Dispatcher):
    """A ``Dispatcher`` that logs and traces each request (see the module docstring).

    Args:
        gateway: as for ``Dispatcher``.
        tracer: spans of each request, or None.
        access_log: one ``driftgate.access`` line per request.
    """

    def __init__(self, gateway: Gateway, tracer: RequestTracer | None, access_log: bool) -> None:
        super().__init__(gateway)
        self.tracer = tracer
        self.access_log = access_log
        self._pending: list[Finished] = []
        self._outcome: Outcome | None = None
        """The outcome ``predict`` returned last: the one of the request whose ``answer``
        or ``answer_now`` returns next (nothing runs in between: encoding does not wait)."""

    def predict_now(self, model: LoadedModel, columns: Columns) -> Outcome:
        outcome = self._outcome = super().predict_now(model, columns)
        return outcome

    async def predict(self, model: LoadedModel, columns: Columns, deadline: float | None = None) -> Outcome:
        outcome = self._outcome = await super().predict(model, columns, deadline)
        return outcome

    def answer_now(self, codec: Codec, name: str, version: str | None, headers: Headers, body: bytes) -> Answer | None:
        started = time.perf_counter()
        try:
            answer = super().answer_now(codec, name, version, headers, body)
        except Exception as exc:
            self._failed(codec, name, version, headers, started, exc)
            raise
        if answer is not None:  # else it goes on through ``answer``, noted there
            self._answered(codec, headers, started)
        return answer

    async def answer(
        self,
        codec: Codec,
        name: str,
        version: str | None,
        headers: Headers,
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Answer:
        started = time.perf_counter()
        try:
            answer = await super().answer(codec, name, version, headers, read_body)
        except Exception as exc:
            self._failed(codec, name, version, headers, started, exc)
            raise
        except asyncio.CancelledError:
            self._failed(codec, name, version, headers, started, ShuttingDownError("cut by the end of the drain"))
            raise
        self._answered(codec, headers, started)
        return answer

    def refused(self, name: str, version: str | None, exc: Exception) -> None:
        super().refused(name, version, exc)
        done = Finished("", [], time.perf_counter())
        self._fail(done, name, version, exc)
        self._note(done)

    # -- the notes -------------------------------------------------------------------------

    def _answered(self, codec: Codec, headers: Headers, started: float) -> None:
        done = Finished(codec.name, headers, started)
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            done.model, done.version = outcome.model.name, str(outcome.model.version)
            done.rows = len(outcome.ids)
            done.stages = getattr(outcome, "stages", None)
        self._note(done)

    def _failed(
        self, codec: Codec, name: str, version: str | None, headers: Headers, started: float, exc: Exception
    ) -> None:
        done = Finished(codec.name, headers, started)
        self._fail(done, name, version, exc)
        self._note(done)

    def _fail(self, done: Finished, name: str, version: str | None, exc: Exception) -> None:
        try:
            model = self.choose(name, version)
            done.model, done.version = model.name, str(model.version)
        except Exception:  # noqa: BLE001 - no such model: noted under the unknown label, as counted
            done.version = version or ""
        done.reason = reason_of(exc)
        if isinstance(exc, GatewayError):
            done.status, done.detail = exc.status_hint, exc.detail
            rows = exc.extra.get("rows")
            done.rows = rows if isinstance(rows, int) else 0
        else:
            done.status = CLIENT_GONE if isinstance(exc, ConnectionError) else 500
            done.detail = type(exc).__name__

    def _note(self, done: Finished) -> None:
        first = not self._pending
        self._pending.append(done)
        if first:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:  # no event loop (a test calling the dispatcher): now
                self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        tracer = self.tracer
        try:
            if tracer is not None:
                tracer.calibrate()
            for done in pending:
                trace_id = tracer.record(done) if tracer is not None and done.protocol else None
                if self.access_log:
                    _log_access(done, trace_id)
        except Exception:  # never let a log line or a span take the server down
            log.exception("cannot log or trace %d prediction requests", len(pending))


def _log_access(done: Finished, trace_id: str | None) -> None:
    duration = done.ended - done.started
    access.info(
        "%s %s version %s: %d %s, %d rows in %.3f ms",
        done.protocol or "-", done.model, done.version or "-", done.status, done.reason, done.rows, duration * 1e3,
        extra={
            "model": done.model,
            "version": done.version,
            "status": done.status,
            "reason": done.reason,
            "rows": done.rows,
            "duration": round(duration, 6),
            "trace_id": trace_id,
        },
    )  # fmt: skip
