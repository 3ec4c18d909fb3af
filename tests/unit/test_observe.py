"""The observed dispatcher (``gateway.observe``): on the awaited route too (a batched model),
each request gets its access line and its spans, after its answer, with its own stages."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import load_settings
from gateway.dispatch import Dispatcher
from gateway.errors import InputRejectedError
from gateway.lifecycle import Gateway
from gateway.observe import ObservedDispatcher
from gateway.samples import sample_records
from gateway.tracing import RequestTracer
from tests.dispatching import answer_v1

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_off_by_default_the_dispatcher_is_the_plain_one() -> None:
    assert type(Gateway(load_settings({}, repository=str(MODELS))).dispatcher) is Dispatcher


def test_concurrent_batched_requests_each_get_their_line_and_spans(caplog: pytest.LogCaptureFixture) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    gateway = Gateway(
        load_settings({}, repository=str(MODELS), batching="penguins=8:5", access_log=True), tracer=RequestTracer(provider)
    )
    gateway.scan()
    assert isinstance(gateway.dispatcher, ObservedDispatcher)
    model = gateway.model_registry.get("penguins")
    rows = sample_records(model.spec, 4, seed=1)
    bodies = [json.dumps({"instances": rows[: n + 1]}).encode() for n in range(3)]
    bad = json.dumps({"instances": [{**rows[0], "island": "Atlantis"}]}).encode()

    async def main() -> list[bytes | BaseException]:
        answers = await asyncio.gather(*(answer_v1(gateway, model, b) for b in [*bodies, bad]), return_exceptions=True)
        await asyncio.sleep(0)  # the notes are written on the loop's next turn
        return answers

    with caplog.at_level(logging.INFO, logger="driftgate.access"):
        answers = asyncio.run(main())
    assert isinstance(answers[3], InputRejectedError)
    lines = sorted(
        ((r.__dict__["status"], r.__dict__["rows"], r.__dict__["reason"]) for r in caplog.records), key=str
    )
    assert lines == [(200, 1, "ok"), (200, 2, "ok"), (200, 3, "ok"), (422, 1, "rejected")]

    spans = exported.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    attributes = [dict(s.attributes or {}) for s in roots]
    assert sorted(int(a["driftgate.rows"]) for a in attributes) == [1, 1, 2, 3]  # type: ignore[arg-type]
    for root, attrs in zip(roots, attributes, strict=True):
        children = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
        ok = attrs["driftgate.reason"] == "ok"
        assert [c.name for c in children] == (["decode", "validate", "transform", "infer", "monitor"] if ok else [])
        for child in children:
            assert root.start_time <= child.start_time <= child.end_time <= root.end_time  # type: ignore[operator]
