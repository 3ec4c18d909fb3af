"""OpenTelemetry traces of prediction requests, received by a real OTLP/HTTP receiver
(``tests.helpers.otlp``) from a real server process configured by the standard ``OTEL_*``
variables."""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys

import pytest

from tests.helpers.otlp import OtlpReceiver, ReceivedSpan
from tests.integration.conftest import StartServer
from tests.integration.support import REPO_ROOT, V2_ROW, penguin

STAGES = ["decode", "validate", "transform", "infer", "monitor"]
SERVER_KIND = 2  # Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def _check_request_trace(spans: list[ReceivedSpan], trace_id: str, caller: str, route: str, version: str) -> None:
    """One server span child of the caller's, with one child span per stage, in order and
    within it, every span with the model and version."""
    (root,) = [s for s in spans if s.parent_span_id == caller]
    assert root.name == f"POST {route}" and root.kind == SERVER_KIND
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["driftgate.rows"] == 1 and root.attributes["driftgate.reason"] == "ok"
    children = sorted((s for s in spans if s.parent_span_id == root.span_id), key=lambda s: s.start)
    assert [s.name for s in children] == STAGES
    assert len(spans) == 1 + len(STAGES), [s.name for s in spans]
    for span in spans:
        assert span.attributes["driftgate.model"] == "penguins"
        assert span.attributes["driftgate.model.version"] == version
        assert root.start <= span.start <= span.end <= root.end
    for before, after in itertools.pairwise(children):
        assert before.end <= after.start


@pytest.mark.slow
def test_a_traced_request_yields_one_span_per_stage_under_the_callers_trace(start_server: StartServer) -> None:
    with OtlpReceiver() as receiver:
        server = start_server(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "driftgate-under-test",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            }
        )
        v1_parent, v1_trace, v1_caller = _traceparent()
        v2_parent, v2_trace, v2_caller = _traceparent()
        with server.client() as client:
            v1 = client.post(
                "/v1/models/penguins:predict",
                json={"instances": [penguin()]},
                headers={"traceparent": v1_parent, "tracestate": "vendor=abc"},
            )
            v2 = client.post(
                "/v2/models/penguins/versions/1/infer", json={"inputs": V2_ROW}, headers={"traceparent": v2_parent}
            )
            untraced = client.post("/v1/models/penguins:predict", json={"instances": [penguin()]})
            rejected = client.post("/v1/models/penguins:predict", json={"instances": [penguin(island="Atlantis")]})
        assert (v1.status_code, v2.status_code, untraced.status_code, rejected.status_code) == (200, 200, 200, 422)

        spans = receiver.wait_for(lambda got: len(got) >= 4 * 6 - 5)
        _check_request_trace(_trace(spans, v1_trace), v1_trace, v1_caller, "/v1/models/{name}:predict", "1")
        _check_request_trace(_trace(spans, v2_trace), v2_trace, v2_caller, "/v2/models/{name}/infer", "1")
        assert {s.trace_state for s in _trace(spans, v1_trace) if s.parent_span_id == v1_caller} == {"vendor=abc"}
        assert receiver.paths[0] == "/v1/traces"
        assert {s.resource["service.name"] for s in spans} == {"driftgate-under-test"}

        # without a traceparent: a trace of its own; a refusal: its request span only, marked
        roots = [s for s in spans if s.kind == SERVER_KIND and s.trace_id not in (v1_trace, v2_trace)]
        assert len(roots) == 2 and all(s.parent_span_id == "" for s in roots)
        (refused,) = [s for s in roots if s.attributes["http.response.status_code"] == 422]
        assert refused.attributes["error.type"] == "rejected" and refused.status_code != STATUS_ERROR  # a 4xx
        assert not [s for s in spans if s.parent_span_id == refused.span_id]
        assert server.stop().exit_code == 0


def test_without_an_otlp_endpoint_nothing_of_opentelemetry_is_imported() -> None:
    code = (
        "import sys; from gateway.server import serve; from gateway.tracing import tracer_from_environ;"
        "assert tracer_from_environ({}) is None;"
        "assert tracer_from_environ({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://x', 'OTEL_SDK_DISABLED': 'true'}) is None;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin'"),
    ],
)
def test_a_tracing_configuration_driftgate_cannot_follow_fails_start_up_in_one_line(
    env: dict[str, str], said: str
) -> None:
    from gateway.errors import ConfigError
    from gateway.tracing import check_environ

    with pytest.raises(ConfigError, match=said.replace("(", r"\(")):
        check_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", **env})


def test_an_unsampled_caller_gets_no_spans() -> None:
    """``parentbased_always_on``: a caller that did not sample its trace gets none here."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.observe import Finished
    from gateway.tracing import RequestTracer

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = RequestTracer(provider)
    for flags, expected in (("00", 0), ("01", 1)):
        parent, _, _ = _traceparent()
        done = Finished("v1", [(b"traceparent", parent[:-2].encode() + flags.encode())], 0.0)
        tracer.record(done)
        assert len(exported.get_finished_spans()) == expected
