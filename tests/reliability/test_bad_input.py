"""Reliability catalogue A (bad input), against the real server process.

Every test names its catalogue ID (``tests/reliability/CATALOGUE.md``),
adapted to the contract: errors are ``application/problem+json`` with ``error`` equal to
``detail``; guard rejections are 422 with ``violations`` [{row, feature, reason, value}].
"Alive" (``assert_alive``): ``GET /v2/health/live`` answers 200 within 100 ms (best of
three, so one scheduling hiccup on a shared machine is not a verdict) and the server's
PID is unchanged.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from tests.helpers.metrics import scrape
from tests.helpers.raw_http import raw_exchange, raw_request, read_response
from tests.integration.support import V2_ROW, admin, assert_problem, bundle, penguin
from tests.reliability.conftest import Prober, ServerProcess, server_pid
from tests.reliability.fixture_models import assert_alive, knob_spec_bytes, nan_model

PREDICT = "/v1/models/penguins:predict"
INFER = "/v2/models/penguins/infer"
FEEDBACK = "/v1/models/penguins/feedback"
LIMIT_BYTES = 65_536
LIMIT_ROWS = 50


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a 64 KiB body limit and 50 rows per request. Its budget of bodies in
    flight holds every body the A10 tests send at once (8 near the limit; the default is 4),
    so what they see is each body's own answer, not the budget's 503 (``test_body_budget``)."""
    from tests.integration.support import copy_models

    work = tmp_path_factory.mktemp("limited")
    env = {
        "DRIFTGATE_MAX_BODY_BYTES": str(LIMIT_BYTES),
        "DRIFTGATE_MAX_BATCH_ROWS": str(LIMIT_ROWS),
        "DRIFTGATE_MAX_BODY_BYTES_IN_FLIGHT": str(16 * LIMIT_BYTES),
    }
    proc = ServerProcess(work / "run", copy_models(work / "models"), env=env).start()
    yield proc
    proc.stop()


def alive(proc: ServerProcess, pid: int | None = None) -> None:
    assert_alive(proc.url, proc.process, pid if pid is not None else server_pid(proc))


def violations(response: httpx.Response) -> list[tuple[int, str, str]]:
    body = assert_problem(response, 422)
    return [(v["row"], v["feature"], v["reason"]) for v in body["violations"]]


def predicted_rows(client: httpx.Client, model: str = "penguins") -> float:
    return scrape(client).get(
        ("driftgate_rows_total", frozenset({"model": model, "version": "1", "outcome": "predicted"}.items())), 0.0
    )


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    return scrape(client).get((name, frozenset(labels.items())), 0.0)


def problem_of(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, (status, body[:300])
    assert headers["content-type"].split(";")[0] == "application/problem+json", headers
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == expected and problem["error"] == problem["detail"], problem
    return problem


# --- A1: numeric boundaries; the model is not invoked on a rejection ----------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"bill_length_mm": 30.0}, None),  # min, inclusive
        ({"bill_length_mm": 61.0}, None),  # max, inclusive
        ({"year": 2006}, None),
        ({"year": 2010}, None),
        ({"bill_length_mm": math.nextafter(30.0, 0.0)}, ("bill_length_mm", "below_min")),
        ({"bill_length_mm": math.nextafter(61.0, 100.0)}, ("bill_length_mm", "above_max")),
        ({"year": 2005}, ("year", "below_min")),
        ({"year": 2011}, ("year", "above_max")),
        ({"year": 2008.5}, ("year", "wrong_type")),  # a fraction for an integer feature
        ({"body_mass_g": -5000.0}, ("body_mass_g", "below_min")),
    ],
)
def test_a1_numeric_boundaries_and_no_inference_on_rejection(
    client: httpx.Client, changes: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    before = scrape(client)
    response = client.post(PREDICT, json={"instances": [penguin(**changes)]})
    after = scrape(client)
    key = {"model": "penguins", "version": "1"}
    predicted = ("driftgate_rows_total", frozenset({**key, "outcome": "predicted"}.items()))
    rejected = ("driftgate_rows_total", frozenset({**key, "outcome": "rejected"}.items()))
    infer_count = ("driftgate_request_seconds_count", frozenset({"model": "penguins", "stage": "infer"}.items()))
    if expected is None:
        assert response.status_code == 200, response.text
        assert after.get(predicted, 0) == before.get(predicted, 0) + 1
        return
    assert violations(response) == [(0, *expected)]
    assert after.get(predicted, 0) == before.get(predicted, 0), "a rejected row reached the model"
    assert after.get(infer_count, 0) == before.get(infer_count, 0), "the infer stage ran for a rejected row"
    assert after.get(rejected, 0) == before.get(rejected, 0) + 1
    feature, reason = expected
    series = ("driftgate_violations_total", frozenset({**key, "feature": feature, "reason": reason}.items()))
    assert after.get(series, 0) == before.get(series, 0) + 1


# --- A2: unseen categories, bounded echo, no new labels -----------------------------------


@pytest.mark.parametrize(
    "value",
    ["biscoe", " Biscoe", "Biscoe ", "BISCOE", "Bi\u0301scoe", "Bisc\u043ee", "", "\u202eeocsiB", "x" * 10_000],
    ids=[
        "case",
        "lead-space",
        "trail-space",
        "upper",
        "combining-accent",
        "cyrillic-o",
        "empty",
        "rtl-override",
        "10k",
    ],
)
def test_a2_unseen_category_variants_are_422_with_bounded_echo(client: httpx.Client, value: str) -> None:
    """Categories match exactly (no case folding, trimming or Unicode normalisation): every
    variant of a known category is ``unseen_category``, echoed as sent up to 200 characters."""
    before = {k for k in scrape(client) if k[0] == "driftgate_violations_total"}
    response = client.post(PREDICT, json={"instances": [penguin(island=value)]})
    body = assert_problem(response, 422)
    assert [(v["row"], v["feature"], v["reason"]) for v in body["violations"]] == [(0, "island", "unseen_category")]
    echoed = body["violations"][0]["value"]
    if len(value) <= 200:
        assert echoed == value
    else:
        assert echoed == value[:200] + "…"
    assert len(response.content) < 2_000, "the answer must not amplify a long value"
    after = {k for k in scrape(client) if k[0] == "driftgate_violations_total"}
    new = {dict(labels)["feature"] for _, labels in after - before}
    assert new <= {"island"}, f"a client value became a label: {new}"
    if value:
        assert all(value not in dict(labels).values() for _, labels in after), "a client value became a label value"


# --- A3: non-finite inputs, and a model that answers NaN ----------------------------------


@pytest.mark.parametrize(
    ("literal", "status"),
    [
        ("1e400", 422),
        ("-1e400", 422),
        ("NaN", 400),
        ("Infinity", 400),
        ("-Infinity", 400),
        ('"nan"', 422),
        ('"inf"', 422),
    ],
)
def test_a3_non_finite_inputs_are_never_predicted(client: httpx.Client, literal: str, status: int) -> None:
    body = json.dumps({"instances": [penguin()]}).replace('"bill_length_mm": 45.2', f'"bill_length_mm": {literal}')
    assert literal in body
    before = predicted_rows(client)
    response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, status)
    if status == 422:
        reason = "wrong_type" if literal.startswith('"') else "not_finite"
        assert [(v["feature"], v["reason"]) for v in problem["violations"]] == [("bill_length_mm", reason)]
    assert predicted_rows(client) == before


def test_a3_v2_binary_nan_input_is_not_finite(client: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                *V2_ROW,
                {"name": "bill_length_mm", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}},
            ]
        }
    ).encode()
    response = client.post(
        INFER,
        content=header + b"\x00\x00\xc0\x7f",  # float32 NaN, little-endian
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert violations(response) == [(0, "bill_length_mm", "not_finite")]


@pytest.fixture(scope="module")
def nan_served(server: ServerProcess, client: httpx.Client) -> str:
    """The NaN fixture model (``Y = X / X``) registered via PUT as ``nanmodel``."""
    response = client.put(
        "/v1/models/nanmodel/versions/1", files=bundle(nan_model(), knob_spec_bytes("nanmodel")), headers=admin()
    )
    assert response.status_code == 201, response.text
    return "nanmodel"


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a3_nan_model_output_is_an_error_never_a_silent_null(
    client: httpx.Client, nan_served: str, protocol: str
) -> None:
    """The lead's decision: a NaN or infinite output is a 500 ``inference-failed`` naming the
    cause, nothing is predicted (no id, not counted), and the non-finite count rises."""
    labels = {"model": nan_served, "version": "1"}
    before = scrape(client)
    if protocol == "v1":
        response = client.post(f"/v1/models/{nan_served}:predict", json={"instances": [{"x": 0.0}]})
    else:
        tensor = {"name": "x", "datatype": "FP64", "shape": [1], "data": [0.0]}
        response = client.post(f"/v2/models/{nan_served}/infer", json={"inputs": [tensor]})
    problem = assert_problem(response, 500)
    assert "non-finite" in problem["detail"]
    assert "null" not in response.text and "predictions" not in problem and "outputs" not in problem
    after = scrape(client)
    rows = ("driftgate_rows_total", frozenset({**labels, "outcome": "predicted"}.items()))
    nonfinite = ("driftgate_nonfinite_observations_total", frozenset(labels.items()))
    assert after.get(rows, 0) == before.get(rows, 0), "a NaN answer was counted as predicted"
    assert after[nonfinite] == before.get(nonfinite, 0) + 1
    # the same model answers a finite input normally
    assert (
        client.post(f"/v1/models/{nan_served}:predict", json={"instances": [{"x": 0.5}]}).json()["predictions"][0][
            "value"
        ]
        == 1.0
    )


# --- A4: deep nesting ----------------------------------------------------------------------


def _deep_v1(depth: int) -> bytes:
    row = json.dumps(penguin())[:-1]
    return ('{"instances": [' + row + ', "deep": ' + "[" * depth + "]" * depth + "}]}").encode()


def _deep_v2(depth: int) -> bytes:
    tensor = {"name": "island", "datatype": "BYTES", "shape": [1], "data": "@"}
    return json.dumps({"inputs": [tensor]}).replace('"@"', "[" * depth + '"Biscoe"' + "]" * depth).encode()


@pytest.mark.parametrize("depth", [50, 101, 1_000, 100_000])
@pytest.mark.parametrize("where", ["v1-unused-field", "v2-data"])
def test_a4_deep_nesting_is_refused_never_a_500(
    server: ServerProcess, client: httpx.Client, where: str, depth: int
) -> None:
    """Shallow nesting reaches the guards (an unknown field, or a list where a category
    belongs: 422); deep nesting is a fast 400 (never a 500 or a crash)."""
    pid = server_pid(server)
    body = _deep_v1(depth) if where == "v1-unused-field" else _deep_v2(depth)
    t0 = time.perf_counter()
    response = client.post(
        PREDICT if where == "v1-unused-field" else INFER, content=body, headers={"content-type": "application/json"}
    )
    seconds = time.perf_counter() - t0
    if depth <= 101:
        assert response.status_code in (400, 422), response.text[:300]
        assert_problem(response, response.status_code)
    else:
        problem = assert_problem(response, 400)
        assert "deeply" in problem["detail"]
    assert seconds < 1.0, f"{seconds:.3f} s"
    alive(server, pid)


@pytest.mark.parametrize("path", [PREDICT, INFER, FEEDBACK])
def test_a4_250k_deep_ignored_key_is_a_fast_400_and_live_stays_fast(server: ServerProcess, path: str) -> None:
    """Triton's case: a 250,000-deep value under a key the endpoint does not read. Liveness
    keeps answering within 100 ms (median; every probe under 1 s) while such bodies are sent."""
    pid = server_pid(server)
    nest = "[" * 250_000 + "]" * 250_000
    key = {PREDICT: "instances", INFER: "inputs", FEEDBACK: "feedback"}[path]
    body = ('{"' + key + '": [], "parameters": {"ignored": ' + nest + "}}").encode()
    with Prober(server.url) as prober, httpx.Client(base_url=server.url, timeout=10) as c:
        for _ in range(5):
            t0 = time.perf_counter()
            response = c.post(path, content=body, headers={"content-type": "application/json"})
            assert time.perf_counter() - t0 < 1.0
            assert_problem(response, 400)
    latencies = prober.latencies
    assert not prober.errors and set(prober.statuses) == {200}
    # the median, not the tail: on a shared 2-core machine one probe can wait on the
    # scheduler; a blocked event loop shows in every probe, and none may take a second
    median = statistics.median(latencies)
    assert median < 0.1, f"liveness median {median * 1000:.0f} ms while deep bodies were sent"
    assert max(latencies) < 1.0, f"a liveness probe took {max(latencies) * 1000:.0f} ms"
    alive(server, pid)


# --- A5: huge numbers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "feature", "status", "reason"),
    [
        ("1" * 4_301, "year", 400, None),
        ("1" * 1_000_000, "bill_length_mm", 400, None),
        ("1e999999", "bill_length_mm", 422, "not_finite"),
        ("1e999999", "year", 422, "not_finite"),
        ("0." + "1" * 1_000_000, "bill_length_mm", 422, "below_min"),
        ("0." + "1" * 1_000_000, "year", 422, "wrong_type"),
        ("-0", "year", 422, "below_min"),
    ],
    ids=[
        "int-4301-digits",
        "int-1M-digits",
        "1e999999",
        "1e999999-int",
        "1MB-fraction",
        "1MB-fraction-int",
        "minus-zero",
    ],
)
def test_a5_huge_numbers_are_refused_fast(
    server: ServerProcess, client: httpx.Client, literal: str, feature: str, status: int, reason: str | None
) -> None:
    pid = server_pid(server)
    sent = penguin(**{feature: 12345})
    body = json.dumps({"instances": [sent]}).replace("12345", literal)
    t0 = time.perf_counter()
    response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    seconds = time.perf_counter() - t0
    problem = assert_problem(response, status)
    if reason is not None:
        assert [(v["feature"], v["reason"]) for v in problem["violations"]] == [(feature, reason)]
        echoed = problem["violations"][0]["value"]
        assert not isinstance(echoed, str) or len(echoed) <= 201
    assert len(response.content) < 4_000, "the answer must not echo the huge number"
    assert seconds < 1.0, f"{seconds:.3f} s"
    alive(server, pid)


# --- A6: duplicates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PREDICT, '{"instances": [ROW], "instances": [ROW]}'),
        (PREDICT, '{"instances": [ROW_OPEN, "year": 2009}]}'),
        (INFER, '{"inputs": [], "inputs": []}'),
        (
            INFER,
            '{"inputs": [{"name": "island", "name": "sex", "datatype": "BYTES", "shape": [1], "data": ["Biscoe"]}]}',
        ),
        (FEEDBACK, '{"feedback": [{"id": "x", "label": "Adelie", "label": "Gentoo"}]}'),
    ],
    ids=["v1-instances-twice", "v1-feature-twice", "v2-inputs-twice", "v2-name-twice", "feedback-label-twice"],
)
def test_a6_duplicate_json_keys_are_400(client: httpx.Client, path: str, body: str) -> None:
    row = json.dumps(penguin())
    text = body.replace("ROW_OPEN", row[:-1]).replace("ROW", row)
    before = predicted_rows(client)
    problem = assert_problem(client.post(path, content=text, headers={"content-type": "application/json"}), 400)
    assert "repeats the key" in problem["detail"]
    assert predicted_rows(client) == before


def test_a6_duplicate_v2_input_names_are_400(client: httpx.Client) -> None:
    inputs = [*V2_ROW, {"name": "year", "datatype": "INT64", "shape": [1], "data": [2009]}]
    problem = assert_problem(client.post(INFER, json={"inputs": inputs}), 400)
    assert "'year'" in problem["detail"] and "twice" in problem["detail"]


def test_a6_duplicate_v2_output_names_are_400(client: httpx.Client) -> None:
    problem = assert_problem(
        client.post(INFER, json={"inputs": V2_ROW, "outputs": [{"name": "label"}, {"name": "label"}]}), 400
    )
    assert "'label'" in problem["detail"] and "twice" in problem["detail"]


# --- A7: V2 shapes and datatypes -----------------------------------------------------------


def _v2_with(tensor: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": [t for t in V2_ROW if t["name"] != tensor["name"]] + [tensor]}


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        ({"name": "bill_length_mm", "datatype": "FP64", "shape": [2, 3], "data": [1.0, 2.0, 3.0, 4.0, 5.0]}, "needs 6"),
        ({"name": "bill_length_mm", "datatype": "FP64", "shape": [2, -5], "data": [1.0]}, "non-negative"),
        ({"name": "bill_length_mm", "datatype": "FP64", "shape": [0, 3], "data": []}, "shape"),
        ({"name": "bill_length_mm", "datatype": "FP64", "shape": [16, 2**60 + 2], "data": [1.0]}, "shape"),
        ({"name": "bill_length_mm", "datatype": "FP8", "shape": [1], "data": [1.0]}, "datatype"),
        ({"name": "bill_length_mm", "datatype": "BF16", "shape": [1], "data": [1.0]}, "datatype"),
        ({"name": "bill_length_mm", "datatype": "fp32", "shape": [1], "data": [1.0]}, "datatype"),
        ({"name": "bill_length_mm", "datatype": "FP32", "shape": [1], "data": ["1.0"]}, "str"),
        ({"name": "bill_length_mm", "datatype": "FP32", "shape": [1], "data": [True]}, "bool"),
        ({"name": "year", "datatype": "INT64", "shape": [1], "data": [1.5]}, "float"),
        ({"name": "year", "datatype": "UINT8", "shape": [1], "data": [300]}, "out of range"),
        ({"name": "year", "datatype": "INT64", "shape": [1], "data": [2**70]}, "range"),
    ],
    ids=[
        "2x3-with-5",
        "negative-dim",
        "zero-rows-3-wide",
        "overflow-dims",
        "FP8",
        "BF16",
        "lowercase-fp32",
        "FP32-strings",
        "FP32-bools",
        "INT64-1.5",
        "UINT8-300",
        "INT64-2**70",
    ],
)
def test_a7_shape_and_datatype_mismatches_are_400_naming_the_input(
    server: ServerProcess, client: httpx.Client, tensor: dict[str, Any], says: str
) -> None:
    proc = psutil.Process(server_pid(server))
    rss = proc.memory_info().rss
    problem = assert_problem(client.post(INFER, json=_v2_with(tensor)), 400)
    assert f"'{tensor['name']}'" in problem["detail"] and says in problem["detail"], problem["detail"]
    assert proc.memory_info().rss - rss < 8 * 2**20, "memory was allocated from the declared shape"


def test_a7_a_thousand_dims_are_400(client: httpx.Client) -> None:
    tensor = {"name": "bill_length_mm", "datatype": "FP64", "shape": [1] * 1000, "data": [1.0]}
    problem = assert_problem(client.post(INFER, json=_v2_with(tensor)), 400)
    assert "'bill_length_mm'" in problem["detail"] and "shape" in problem["detail"]


def test_a7_a_thousand_dims_are_echoed_bounded(client: httpx.Client) -> None:
    tensor = {"name": "bill_length_mm", "datatype": "FP64", "shape": [1] * 1000, "data": [1.0]}
    problem = assert_problem(client.post(INFER, json=_v2_with(tensor)), 400)
    assert len(problem["detail"]) <= 512, f"{len(problem['detail'])} characters"


# --- A8: missing, extra and null features --------------------------------------------------


def test_a8_missing_required_features_are_all_named(client: httpx.Client) -> None:
    response = client.post(PREDICT, json={"instances": [penguin(island=..., year=...)]})
    assert violations(response) == [(0, "island", "missing"), (0, "year", "missing")]


def test_a8_missing_v2_input_is_missing(client: httpx.Client) -> None:
    inputs = [t for t in V2_ROW if t["name"] != "island"]
    assert violations(client.post(INFER, json={"inputs": inputs})) == [(0, "island", "missing")]


def test_a8_unknown_feature_is_refused_with_a_bounded_name(client: httpx.Client) -> None:
    long_name = "colour" * 100
    body = assert_problem(client.post(PREDICT, json={"instances": [penguin(**{long_name: "blue"})]}), 422)
    (v,) = body["violations"]
    assert v["reason"] == "unknown_feature" and v["row"] == 0
    assert len(v["feature"]) <= 201 and long_name.startswith(v["feature"].rstrip("…"))


@pytest.mark.parametrize(
    ("feature", "status"),
    [("island", 422), ("year", 422), ("bill_length_mm", 200), ("sex", 200)],
    ids=["reject-policy", "reject-policy-int", "impute-number", "impute-category"],
)
def test_a8_null_follows_the_missing_policy(client: httpx.Client, feature: str, status: int) -> None:
    response = client.post(PREDICT, json={"instances": [penguin(**{feature: None})]})
    if status == 200:
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] in ("Adelie", "Chinstrap", "Gentoo")
    else:
        assert violations(response) == [(0, feature, "missing")]


def test_a8_empty_v2_inputs_is_400(client: httpx.Client) -> None:
    assert_problem(client.post(INFER, json={"inputs": []}), 400)


# --- A9: content types, encodings, odd bodies ----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", json.dumps({"instances": [penguin()]}).encode(), 200),  # the body decides, not the label
        ("application/json", b"", 400),
        ("application/json", b"null", 400),
        ("application/json", b"[]", 400),
        ("application/json", b"\xef\xbb\xbf" + json.dumps({"instances": [penguin()]}).encode(), 400),
        ("application/json", b'{"instances": [{"island": "Bis\\u0000coe"}]}', 422),
    ],
    ids=["text-plain", "empty", "null", "list", "utf8-bom", "nul-escape"],
)
def test_a9_content_types_and_odd_bodies(client: httpx.Client, content_type: str, body: bytes, status: int) -> None:
    response = client.post(PREDICT, content=body, headers={"content-type": content_type})
    if status == 200:
        assert response.status_code == 200, response.text
        return
    problem = assert_problem(response, status)
    if status == 422:
        island = [v for v in problem["violations"] if v["feature"] == "island"]
        assert island == [{"row": 0, "feature": "island", "reason": "unseen_category", "value": "Bis\x00coe"}], (
            "NUL kept, not truncated"
        )


def test_a9_gzip_body_is_not_decompressed(server: ServerProcess, client: httpx.Client) -> None:
    """``Content-Encoding: gzip`` is not supported: the bytes are parsed as sent (400),
    never inflated (so no decompression bomb) and never a 500."""
    packed = gzip.compress(json.dumps({"instances": [penguin()]}).encode())
    response = client.post(
        PREDICT, content=packed, headers={"content-type": "application/json", "content-encoding": "gzip"}
    )
    assert_problem(response, 400)
    alive(server)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PREDICT, b'{"instances": [{"island": "\xff"}]}'),
        (PREDICT, b'{"instances": [{"isl\xc0\xafand": "Biscoe"}]}'),  # overlong encoding of '/'
        (PREDICT, b'{"instances": [{"island": "\xed\xa0\x80"}]}'),  # a UTF-16 surrogate
        (INFER, b'{"inputs": [{"name": "island", "datatype": "BYTES", "shape": [1], "data": ["\xff"]}]}'),
        (FEEDBACK, b'{"feedback": [{"id": "\xff", "label": "Adelie"}]}'),
    ],
    ids=["v1-value", "v1-overlong-key", "v1-surrogate", "v2-bytes", "feedback-id"],
)
def test_a9_invalid_utf8_is_400(server: ServerProcess, path: str, body: bytes) -> None:
    status, headers, answer = raw_request(server.port, "POST", path, body)
    problem_of(status, headers, answer, 400)


# --- A10: batch and allocation limits ------------------------------------------------------


def test_a10_rows_over_the_limit_are_413(limited: ServerProcess) -> None:
    with limited.client() as c:
        assert c.post(PREDICT, json={"instances": [penguin()] * LIMIT_ROWS}).status_code == 200
        problem = assert_problem(c.post(PREDICT, json={"instances": [penguin()] * (LIMIT_ROWS + 1)}), 413)
        assert str(LIMIT_ROWS) in problem["detail"]
        tensors = [{**t, "shape": [LIMIT_ROWS + 1], "data": t["data"] * (LIMIT_ROWS + 1)} for t in V2_ROW]
        assert_problem(c.post(INFER, json={"inputs": tensors}), 413)


@pytest.mark.parametrize(
    ("header", "raw"),
    [
        ({"name": "bill_length_mm", "datatype": "FP64", "shape": [100_000_000], "data": [1.0]}, None),
        (
            {
                "name": "bill_length_mm",
                "datatype": "FP64",
                "shape": [100_000_000],
                "parameters": {"binary_data_size": 8},
            },
            b"\x00" * 8,
        ),
        (
            {"name": "island", "datatype": "BYTES", "shape": [100_000_000], "parameters": {"binary_data_size": 5}},
            b"\x01\x00\x00\x00a",
        ),
    ],
    ids=["json-one-datum", "binary-fp64-8-bytes", "binary-bytes-one-element"],
)
def test_a10_huge_declared_shape_allocates_nothing(
    server: ServerProcess, client: httpx.Client, header: dict[str, Any], raw: bytes | None
) -> None:
    proc = psutil.Process(server_pid(server))
    rss = proc.memory_info().rss
    if raw is None:
        response = client.post(INFER, json={"inputs": [header]})
    else:
        head = json.dumps({"inputs": [header]}).encode()
        response = client.post(
            INFER,
            content=head + raw,
            headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
        )
    assert_problem(response, 400)
    assert proc.memory_info().rss - rss < 8 * 2**20, "memory was allocated from the declared shape"


def test_a10_concurrent_maximal_bodies_keep_memory_bounded(limited: ServerProcess) -> None:
    """Eight concurrent bodies just under the byte limit, each holding far more rows than
    allowed: all refused (413), peak RSS growth bounded, the server alive."""
    pid = server_pid(limited)
    proc = psutil.Process(pid)
    rss = proc.memory_info().rss
    values = [1.5] * ((LIMIT_BYTES - 200) // 5)
    body = json.dumps(
        {"inputs": [{"name": "bill_length_mm", "datatype": "FP64", "shape": [len(values)], "data": values}]}
    ).encode()
    assert len(body) <= LIMIT_BYTES
    results: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=limited.url, timeout=10) as c:
            for _ in range(5):
                results.append(c.post(INFER, content=body).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [413] * 40
    assert proc.memory_info().rss - rss < 32 * 2**20
    alive(limited, pid)


# --- A11: body size limits on the wire -----------------------------------------------------


@pytest.mark.parametrize("path", [PREDICT, INFER, FEEDBACK])
def test_a11_declared_length_over_the_limit_is_413_before_the_body(limited: ServerProcess, path: str) -> None:
    """Only the head is sent: the 413 arrives without the server waiting for the body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {LIMIT_BYTES + 1}\r\n\r\n"
    ).encode()
    t0 = time.perf_counter()
    status, headers, body = raw_exchange(limited.port, head, timeout=5)
    assert time.perf_counter() - t0 < 1.0
    problem = problem_of(status, headers, body, 413)
    if path != FEEDBACK:  # Litestar answers the feedback route's 413 with a generic detail
        assert str(LIMIT_BYTES) in problem["detail"]
    alive(limited)


@pytest.mark.parametrize("path", [PREDICT, INFER])
def test_a11_chunked_body_crossing_the_limit_is_413(limited: ServerProcess, path: str) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent <= 4 * LIMIT_BYTES:
                sock.sendall(b"1000\r\n" + b" " * 4096 + b"\r\n")
                sent += 4096
        except OSError:
            pass  # the server answered and closed while we were still sending
        status, headers, body = read_response(sock)
    problem_of(status, headers, body, 413)
    alive(limited)


def test_a11_a_million_one_byte_chunks_under_the_limit_complete(server: ServerProcess) -> None:
    pid = server_pid(server)
    proc = psutil.Process(pid)
    rss = proc.memory_info().rss
    payload = json.dumps({"instances": [penguin()]}).encode()
    payload += b" " * (1_000_000 - len(payload))
    framed = b"".join(b"1\r\n" + payload[i : i + 1] + b"\r\n" for i in range(len(payload))) + b"0\r\n\r\n"
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    t0 = time.perf_counter()
    status, _, body = raw_exchange(server.port, head.encode() + framed, timeout=10)
    assert time.perf_counter() - t0 < 5.0
    assert status in (200, 400), body[:300]
    if status == 200:
        assert json.loads(body)["predictions"][0]["label"] == "Gentoo"
    assert proc.memory_info().rss - rss < 64 * 2**20
    alive(server, pid)


# --- A14: V2 conformance details -----------------------------------------------------------


def test_a14_v2_success_is_200_and_echoes_the_id(client: httpx.Client) -> None:
    response = client.post(INFER, json={"inputs": V2_ROW, "id": "request-7"})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "request-7"
    long_id = "i" * 300
    response = client.post(INFER, json={"inputs": V2_ROW, "id": long_id})
    assert response.status_code == 200 and response.json()["id"] == long_id


def test_a14_request_parameters_are_not_echoed(client: httpx.Client) -> None:
    """1,000 request parameters are accepted (the body limit bounds them) and not echoed."""
    response = client.post(INFER, json={"inputs": V2_ROW, "parameters": {f"k{i}": i for i in range(1000)}})
    assert response.status_code == 200, response.text
    assert "k999" not in response.text and len(response.content) < 1_000


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/no-such-model/infer", {"inputs": V2_ROW}, 404),
        ("/v2/models/penguins/versions/99/infer", {"inputs": V2_ROW}, 404),
        (INFER, {"inputs": V2_ROW, "outputs": [{"name": "no-such-output"}]}, 400),
    ],
    ids=["unknown-model", "unknown-version", "unknown-output"],
)
def test_a14_v2_errors_carry_error(client: httpx.Client, path: str, body: dict[str, Any], status: int) -> None:
    problem = assert_problem(client.post(path, json=body), status)
    if status == 400:
        assert "no-such-output" in problem["error"] and "label" in problem["error"]


# --- A15: one bad row in a thousand --------------------------------------------------------


def test_a15_one_bad_row_refuses_the_whole_batch(client: httpx.Client) -> None:
    rows = [penguin() for _ in range(1000)]
    rows[537] = penguin(island="Mars")
    before = scrape(client)
    body = assert_problem(client.post(PREDICT, json={"instances": rows}), 422)
    after = scrape(client)
    assert body["violations"] == [{"row": 537, "feature": "island", "reason": "unseen_category", "value": "Mars"}]
    assert body["rows"] == 1000 and body["rejected_rows"] == 1
    assert "row 537" in body["detail"]
    assert "predictions" not in body
    key = {"model": "penguins", "version": "1"}
    for outcome, delta in (("predicted", 0), ("rejected", 1000)):  # every row of the refused request
        series = ("driftgate_rows_total", frozenset({**key, "outcome": outcome}.items()))
        assert after.get(series, 0) == before.get(series, 0) + delta, outcome
    requests = ("driftgate_requests_total", frozenset({"model": "penguins", "reason": "rejected"}.items()))
    assert after.get(requests, 0) == before.get(requests, 0) + 1, "one request, counted once"
