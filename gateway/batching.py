"""Dynamic batching: concurrent requests to one model run as one onnxruntime call.

A model's matrix multiplications cost far less per row in one call of 32 rows than in 32
calls of one row (the weights are read once, not 32 times). With batching on for a
model, each request is guarded and transformed on its own as always; only its matrix
joins a queue. The queue is run as one call when it holds ``max_rows`` rows, or when its
first request has waited ``max_wait`` seconds, whichever comes first; each request then
gets its own slice of the answer. Nothing else changes: ids, monitoring and errors are
per request, and a request larger than ``max_rows`` runs alone at once.

So batching adds at most ``max_wait`` to a request's latency (the p99 bound the
benchmarks check), and under load it raises throughput because the queue fills before
the wait is up. It does not wait for requests that are not coming: once the requests that
arrived together have joined (the next turn of the event loop), a queue that holds every
prediction request in progress runs at once, so a lone request (one client, light
traffic) is not held for ``max_wait``. It is off by default and configured per model
(``Settings.batching``).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from gateway.errors import ConfigError
from gateway.runtime import Inference

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

    from gateway.runtime import Runtime

__all__ = ["OFFLOAD_SECONDS", "BatchPolicy", "Batcher", "parse_batching", "runs_long"]

OFFLOAD_SECONDS = 0.002
"""A call expected to take longer than this runs on a worker thread, so the event loop
keeps reading requests (and answering health checks) meanwhile; shorter ones run inline:
a thread hop costs more than a small inference."""


def runs_long(runtime: Runtime, rows: int) -> bool:
    """True if a call of ``rows`` rows is expected to take longer than ``OFFLOAD_SECONDS``
    (from the cost per call and per row fitted at warm-up), or may take any time at all
    because the model's work depends on input values (``Runtime.variable_cost``): such a
    call goes to a worker thread, under the request's deadline."""
    return runtime.variable_cost or runtime.seconds_per_call + runtime.seconds_per_row * rows > OFFLOAD_SECONDS


_ENTRY = re.compile(r"^\s*([A-Za-z0-9_][A-Za-z0-9_.-]*|\*)\s*=\s*(\d+)\s*:\s*(\d+(?:\.\d+)?)\s*$")


class BatchPolicy(msgspec.Struct, frozen=True):
    """Dynamic batching of one model: up to ``max_rows`` rows per call, the first request
    waiting at most ``max_wait`` seconds."""

    max_rows: int
    max_wait: float


def parse_batching(text: str) -> dict[str, BatchPolicy]:
    """``"digits=32:2,penguins=16:0.5"`` (wait in milliseconds; ``*`` for every model) to
    policies by model name. Raises ``ConfigError`` naming the bad entry."""
    policies: dict[str, BatchPolicy] = {}
    for entry in filter(str.strip, text.split(",")):
        match = _ENTRY.match(entry)
        if match is None:
            raise ConfigError(
                f"invalid batching entry {entry.strip()[:60]!r}: expected NAME=MAX_ROWS:MAX_WAIT_MS, e.g. digits=32:2"
            )
        name, rows, wait_ms = match.group(1), int(match.group(2)), float(match.group(3))
        if rows < 2 or rows > 65536:
            raise ConfigError(f"invalid batching entry {entry.strip()!r}: MAX_ROWS must be 2 to 65536")
        if wait_ms > 1000:
            raise ConfigError(f"invalid batching entry {entry.strip()!r}: MAX_WAIT_MS must be at most 1000")
        policies[name] = BatchPolicy(rows, wait_ms / 1000)
    return policies


class Batcher:
    """The queue of one model version (see the module docstring). Lives on the event loop
    of the server process; ``run`` is awaited by the request handlers."""

    def __init__(self, runtime: Runtime, policy: BatchPolicy, in_progress: Callable[[], int] | None = None) -> None:
        """``in_progress``: how many prediction requests this process is serving now (each
        joins some queue or is answered without one); None: always wait up to ``max_wait``."""
        self.runtime = runtime
        self.policy = policy
        self.in_progress = in_progress
        self._queue: list[tuple[NDArray[np.float32], asyncio.Future[Inference]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._look: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        """onnxruntime calls made so far (for tests and benchmarks)."""

    async def run(self, matrix: NDArray[np.float32]) -> Inference:
        """What the model says about ``matrix``, computed together with whatever other
        requests are queued. Cancelling the caller (a missed deadline) drops its share."""
        n = len(matrix)
        if n >= self.policy.max_rows:
            self.calls += 1
            return await _call(self.runtime, matrix)
        if self._rows + n > self.policy.max_rows:
            self._dispatch()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Inference] = loop.create_future()
        self._queue.append((matrix, future))
        self._rows += n
        if self._rows >= self.policy.max_rows:
            self._dispatch()
        else:
            if self._timer is None:
                self._timer = loop.call_later(self.policy.max_wait, self._dispatch)
            if self._look is None and self.in_progress is not None:
                # requests that arrived with this one join in this turn of the loop: look after it
                self._look = loop.call_soon(self._dispatch_if_alone)
        return await future

    def _dispatch_if_alone(self) -> None:
        """Run the queue now if it holds every prediction request in progress."""
        self._look = None
        assert self.in_progress is not None
        if self._queue and len(self._queue) >= self.in_progress():
            self._dispatch()

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._look is not None:
            self._look.cancel()
            self._look = None
        queue, self._queue, self._rows = self._queue, [], 0
        queue = [(m, f) for m, f in queue if not f.done()]  # callers that gave up
        if queue:
            self.calls += 1
            task = asyncio.get_running_loop().create_task(self._run(queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, queue: list[tuple[NDArray[np.float32], asyncio.Future[Inference]]]) -> None:
        matrix = queue[0][0] if len(queue) == 1 else np.concatenate([m for m, _ in queue])
        try:
            inference = await _call(self.runtime, matrix)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure, whatever it is
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for m, future in queue:
            end = start + len(m)
            if not future.done():
                future.set_result(_slice(inference, start, end))
            start = end


def _slice(inference: Inference, start: int, end: int) -> Inference:
    p, v = inference.probabilities, inference.values
    return Inference(None if p is None else p[start:end], None if v is None else v[start:end])


async def _call(runtime: Runtime, matrix: NDArray[np.float32]) -> Inference:
    if runs_long(runtime, len(matrix)):
        return await asyncio.get_running_loop().run_in_executor(None, runtime.run, matrix)
    return runtime.run(matrix)
