"""OpenTelemetry traces of prediction requests, exported over OTLP/HTTP when the standard
``OTEL_*`` variables ask for them.

Tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set (and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``), as for
every instrumented server; it needs the ``otel`` extra (``pip install 'driftgate[otel]'``,
in the image already): without it, start-up fails with one line saying so. The SDK reads
the rest of its configuration itself: ``OTEL_SERVICE_NAME`` (default here: ``driftgate``),
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``
(default ``parentbased_always_on``), ``OTEL_EXPORTER_OTLP_*_HEADERS``, ``_TIMEOUT`` and
``_COMPRESSION``, and ``OTEL_BSP_*`` for the batching. Only the ``http/protobuf`` protocol
is spoken.

Each prediction request (V1 predict, V2 infer) is one ``SERVER`` span, named after its
route (``POST /v1/models/{name}:predict``), child of the caller's span when the request
carries a W3C ``traceparent`` (and ``tracestate``); under it one span per stage: ``decode``
(from the request reaching the dispatcher to the guards: version choice, admission, body
decoding), ``validate``, ``transform``, ``infer`` (with dynamic batching, the wait in the
queue too) and ``monitor``. Attributes: ``driftgate.model``, ``driftgate.model.version``
(on every span), and on the request's span ``driftgate.rows``, ``driftgate.reason`` (as
counted in ``driftgate_requests_total``), ``http.request.method``, ``http.route`` and
``http.response.status_code``; a 5xx answer sets the span's status to error, any failure
``error.type`` to its reason. A request that failed has its request span only.

Nothing of this runs on the way of a request: spans are made after the fact from the
timestamps the stages already take (``gateway.observe``), once the answer is written, and
exported in batches on the SDK's own thread. With tracing off, none of it is imported.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.observe import Finished

__all__ = ["RequestTracer", "check_environ", "tracer_from_environ"]

log = logging.getLogger("driftgate.tracing")

FLUSH_SECONDS = 2.0
"""At exit, how long the spans not yet exported may take to go (a collector that does not
answer must not hold the process past its drain bound)."""

STAGES = ("validate", "transform", "infer", "monitor")
"""The stages after ``decode``, in order, between the timestamps of ``Outcome.stages``."""


def _wanted(env: Mapping[str, str]) -> str | None:
    """The variable naming the endpoint when ``env`` asks for traces, else None; raises
    ``ConfigError`` on a configuration driftgate cannot follow."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint_var = next(
        (v for v in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") if env.get(v, "").strip()), None
    )
    if endpoint_var is None:
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: driftgate exports traces over OTLP only ('otlp' or 'none')")
    for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(var, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise ConfigError(f"{var}={protocol!r}: driftgate exports traces over OTLP/HTTP only ('http/protobuf')")
            break
    if not (_installed("opentelemetry.sdk.trace") and _installed("opentelemetry.exporter.otlp.proto.http")):
        raise ConfigError(
            f"{endpoint_var} is set, but the OpenTelemetry SDK is not installed: pip install 'driftgate[otel]' "
            f"(or unset {endpoint_var} to serve without traces)"
        )
    return endpoint_var


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def check_environ(environ: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` if ``environ`` asks for traces driftgate cannot export (before
    any server process starts: one line, not a failed worker)."""
    _wanted(environ)


def tracer_from_environ(environ: Mapping[str, str] | None = None) -> RequestTracer | None:
    """The tracer the ``OTEL_*`` variables of ``environ`` (default: the process's) ask for,
    or None when tracing is off (see the module docstring). Raises ``ConfigError``."""
    env = os.environ if environ is None else environ
    endpoint_var = _wanted(env)
    if endpoint_var is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from gateway import __version__

    resource = Resource.create({"service.version": __version__})  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):  # neither names it
        resource = resource.merge(Resource({"service.name": "driftgate"}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers... from OTEL_EXPORTER_OTLP_*
    service = provider.resource.attributes.get("service.name")
    log.info("tracing: spans of prediction requests go to %s over OTLP/HTTP, as service %r", env[endpoint_var], service)
    return RequestTracer(provider)


class RequestTracer:
    """Turns finished requests into spans (see the module docstring); ``shutdown`` exports
    what is left."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from gateway import __version__
        from gateway.http.routes import HOT_ROUTES

        self.provider = provider
        self._tracer = provider.get_tracer("driftgate", __version__)
        self._extract = TraceContextTextMapPropagator().extract
        self._in_context = trace.set_span_in_context
        self._server = SpanKind.SERVER
        self._status: Any = Status
        self._failed = StatusCode.ERROR
        self._routes = {route.codec.name: f"{route.prefix}{{name}}{route.suffix}" for route in HOT_ROUTES}
        self._offset = 0
        self.calibrate()

    def calibrate(self) -> None:
        """Take the offset from ``time.perf_counter`` (the stages' clock) to the wall clock
        again (the wall clock may have been slewed meanwhile)."""
        self._offset = time.time_ns() - time.perf_counter_ns()

    def _ns(self, perf_seconds: float) -> int:
        return int(perf_seconds * 1e9) + self._offset

    def record(self, done: Finished) -> str | None:
        """The spans of one finished request; returns its trace id (hex) if it was sampled."""
        carrier = {}
        for key, value in done.headers:
            if key == b"traceparent" or key == b"tracestate":
                carrier[key.decode()] = value.decode("latin-1")
        parent = self._extract(carrier) if carrier else None
        route = self._routes.get(done.protocol, done.protocol)
        model = {"driftgate.model": done.model, "driftgate.model.version": done.version}
        span = self._tracer.start_span(
            f"POST {route}",
            context=parent,
            kind=self._server,
            attributes={
                **model,
                "driftgate.rows": done.rows,
                "driftgate.reason": done.reason,
                "http.request.method": "POST",
                "http.route": route,
                "http.response.status_code": done.status,
            },
            start_time=self._ns(done.started),
        )
        context = span.get_span_context()
        if not span.is_recording():  # not sampled: nothing more to make
            span.end()
            return None
        if done.reason != "ok":
            span.set_attribute("error.type", done.reason)
            if done.status >= 500:
                span.set_status(self._status(self._failed, done.detail))
        stages = done.stages
        if stages is not None:
            inside = self._in_context(span)
            start = done.started
            for name, end in zip(("decode", *STAGES), stages, strict=True):
                child = self._tracer.start_span(name, context=inside, attributes=model, start_time=self._ns(start))
                child.end(end_time=self._ns(end))
                start = end
        span.end(end_time=self._ns(done.ended))
        return format(context.trace_id, "032x")

    def shutdown(self) -> None:
        """Export the spans still waiting, for at most ``FLUSH_SECONDS``, and stop."""
        worker = threading.Thread(target=self.provider.shutdown, name="driftgate-traces-flush", daemon=True)
        worker.start()
        worker.join(FLUSH_SECONDS)
        if worker.is_alive():
            log.warning("spans not exported within %g s at exit were dropped", FLUSH_SECONDS)
