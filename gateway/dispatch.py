"""The one way in: every prediction request, whatever its protocol or entry point.

``Dispatcher`` is what MLServer calls the data plane, transport-neutral: given the model a
request names (and the version it pins, if any), its codec and its body, it

1. **chooses the version**: the pinned one, or the one the model's rollout state picks
   (``gateway.rollout``: the primary, or a canary's share), and mirrors what the primary
   answered to a shadow candidate (``gateway.shadow``), off the response path;
2. **admits** the request or refuses it (``OverloadedError``, 503) at ``max_concurrency``
   requests in progress;
3. **decodes** the body with the protocol's codec (``gateway.codecs``);
4. **schedules** the prediction (``gateway.service``): inline on the calling thread, on a
   worker thread when the batch is expected to be slow, or in the model's dynamic-batching
   queue; under the request's deadline (``DeadlineExceededError``, 504);
5. **encodes** the answer, and **counts** the request once in ``driftgate_requests_total``
   with the reason it ended (its error's ``reason``, or ``ok``).

Two calls: ``answer_now`` for a request whose body is in hand, answered now on the calling
thread if nothing has to wait (the HTTP protocol's direct path), and the awaitable
``answer`` for everything else. Failures are raised from the one error tree, already
counted; the HTTP edge maps them to problem+json. Requests the transport refuses before
they reach here (a body budget full, a client gone mid-body) are counted by ``refused``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from gateway.batching import runs_long
from gateway.errors import DeadlineExceededError, ModelNotFoundError, OverloadedError, ShuttingDownError
from gateway.monitoring.requests import UNKNOWN_MODEL, reason_of
from gateway.repository import parse_version
from gateway.service import complete, prepare, reject

if TYPE_CHECKING:
    from gateway.codecs import Answer, Codec, Headers
    from gateway.lifecycle import Gateway
    from gateway.registry import LoadedModel
    from gateway.runtime import Inference
    from gateway.service import Outcome, Prepared
    from gateway.table import Columns

__all__ = ["Dispatcher"]


def _prepare_and_infer(model: LoadedModel, columns: Columns, guarded: bool) -> tuple[Prepared, Inference | None, float]:
    """The part of a prediction that may run on a worker thread: it changes no shared state."""
    prepared = prepare(model, columns, guarded=guarded)
    if prepared.matrix is None:
        return prepared, None, 0.0
    return prepared, model.runtime.run(prepared.matrix), time.perf_counter()


class Dispatcher:
    """Admission, version choice, scheduling, deadline and counting of prediction requests
    (see the module docstring). One per gateway; used on the event loop's thread only."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings
        self.max_concurrency = settings.max_concurrency
        self.max_rows = settings.max_batch_rows
        self.request_timeout = settings.request_timeout_seconds
        self.guarded = settings.guards
        self.monitored = settings.monitoring
        self.in_flight = 0
        """Requests admitted by ``answer`` and not yet answered (``answer_now`` ends before
        anything else runs). The drain waits for them; a batch queue holding all of them
        runs at once, as nothing else can join it before new input arrives."""

    # -- version choice ----------------------------------------------------------------

    def choose(self, name: str, version: str | None, headers: Sequence[tuple[bytes, bytes]] = ()) -> LoadedModel:
        """The model version that answers a request for ``name`` pinning ``version`` (its
        text in the path; None: the rollout's choice, ``gateway.rollout``, by the request's
        ``headers``). ``ModelNotFoundError`` if there is none. A pinned version is never
        rerouted."""
        if version is None:
            return self.gateway.rollouts.choose(name, headers)
        number = parse_version(version)
        if number is None:
            raise ModelNotFoundError(f"no version {version[:20]!r}: versions are whole numbers from 1")
        return self.gateway.model_registry.get(name, number)

    # -- whole requests ----------------------------------------------------------------

    def answer_now(self, codec: Codec, name: str, version: str | None, headers: Headers, body: bytes) -> Answer | None:
        """The answer to a request whose body is in hand, computed now on this thread; or
        None, with nothing counted, when it has to wait (a batched model, a batch expected
        to be slow): the caller then passes it to ``answer``."""
        label = UNKNOWN_MODEL
        try:
            model = self.choose(name, version, headers)
            label = model.name
            self._admit(self.in_flight + 1)
            if self.gateway.batcher(model) is not None:
                return None  # known before decoding
            decoded = codec.decode(model, body, headers, self.max_rows)
            if runs_long(model.runtime, decoded.columns.n_rows):
                return None
            outcome = self.predict_now(model, decoded.columns)
            if version is None:
                self.gateway.shadow.mirror(model, decoded.columns, outcome)
            answer = codec.encode(decoded, outcome)
        except Exception as exc:
            self.gateway.requests.add(label, reason_of(exc))
            raise
        self.gateway.requests.add(label, "ok")
        return answer

    async def answer(
        self,
        codec: Codec,
        name: str,
        version: str | None,
        headers: Headers,
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Answer:
        """The answer to a request, admitted before its body is read (``read_body``), under
        the deadline that starts now. Raises the error it ended with, counted."""
        label = UNKNOWN_MODEL
        self.in_flight += 1
        try:
            deadline = time.monotonic() + self.request_timeout
            model = self.choose(name, version, headers)
            label = model.name
            self._admit(self.in_flight)
            body = await read_body()
            decoded = codec.decode(model, body, headers, self.max_rows)
            outcome = await self.predict(model, decoded.columns, deadline)
            if version is None:
                self.gateway.shadow.mirror(model, decoded.columns, outcome)
            answer = codec.encode(decoded, outcome)
        except Exception as exc:
            self.gateway.requests.add(label, reason_of(exc))
            raise
        except asyncio.CancelledError:  # the server cut it, ending its drain: answered 503 ShuttingDownError
            self.gateway.requests.add(label, ShuttingDownError.reason)
            raise
        finally:
            self.in_flight -= 1
        self.gateway.requests.add(label, "ok")
        return answer

    def refused(self, name: str, version: str | None, exc: Exception) -> None:
        """Count a request the transport refused or lost before it reached the dispatcher
        (a full body budget, a body that never arrived), under the model it named."""
        try:
            label = self.choose(name, version).name
        except Exception:  # noqa: BLE001 - not a served model: counted under the unknown label
            label = UNKNOWN_MODEL
        self.gateway.requests.add(label, reason_of(exc))

    def _admit(self, in_progress: int) -> None:
        if in_progress > self.max_concurrency:
            raise OverloadedError(
                f"the server is at its limit of {self.max_concurrency} prediction requests in progress; retry shortly"
            )

    # -- scheduling --------------------------------------------------------------------

    def runs_inline(self, model: LoadedModel, rows: int) -> bool:
        """True if a prediction of ``rows`` rows runs inline, on the calling thread: the
        model is not batched and the call is not expected to be slow (``runs_long``)."""
        return self.gateway.batcher(model) is None and not runs_long(model.runtime, rows)

    def predict_now(self, model: LoadedModel, columns: Columns) -> Outcome:
        """Guard, transform, infer and complete on this thread (``service.predict``, with the
        server's settings, ending in ``_finish``)."""
        prepared = prepare(model, columns, guarded=self.guarded)
        inference = None if prepared.matrix is None else model.runtime.run(prepared.matrix)
        return self._finish(model, columns, prepared, inference, time.perf_counter())

    def _finish(
        self, model: LoadedModel, columns: Columns, prepared: Prepared, inference: Inference | None, t3: float
    ) -> Outcome:
        """The end of every prediction: count a rejected batch and raise its error, or
        complete the outcome; then hand the batch to the prediction log, if one is kept."""
        outcome = None if inference is None else complete(model, prepared, inference, t3, self.gateway.predictions, monitored=self.monitored)
        if self.gateway.payloads is not None:
            self.gateway.payloads.batch(model, columns, prepared.checked.violations, outcome)
        if outcome is None:
            reject(model, prepared, monitored=self.monitored)
        return outcome

    async def predict(self, model: LoadedModel, columns: Columns, deadline: float | None = None) -> Outcome:
        """``service.predict`` scheduled by the server's policies:

        - a batch expected to be slow is guarded, transformed and inferred on a worker thread,
          so the event loop keeps answering health checks and small requests meanwhile;
        - a model with dynamic batching on (``Gateway.batcher``) joins its queue;
        - past ``deadline`` (``time.monotonic()``) the request fails with
          ``DeadlineExceededError`` (504), and a late result is dropped before anything of it
          is counted or recorded (ids, metrics, drift).

        Everything else (``runs_inline``) takes the shortest path: on this thread, now.
        """
        if self.runs_inline(model, columns.n_rows):
            return self.predict_now(model, columns)
        batcher = self.gateway.batcher(model)
        if deadline is None:
            deadline = time.monotonic() + self.request_timeout
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                if runs_long(model.runtime, columns.n_rows):
                    run = functools.partial(_prepare_and_infer, model, columns, self.guarded)
                    prepared, inference, t3 = await asyncio.get_running_loop().run_in_executor(None, run)
                else:
                    assert batcher is not None
                    prepared = prepare(model, columns, guarded=self.guarded)
                    inference = None if prepared.matrix is None else await batcher.run(prepared.matrix)
                    t3 = time.perf_counter()
        except TimeoutError:
            raise DeadlineExceededError(
                f"the prediction did not finish within {self.request_timeout:g} s; nothing was predicted"
            ) from None
        return self._finish(model, columns, prepared, inference, t3)
