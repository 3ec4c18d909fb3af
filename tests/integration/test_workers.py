"""``driftgate serve --workers 2``: one port, two real worker processes, one fleet.

- both workers serve (their prediction ids carry distinct prefixes), and ``/metrics`` and
  ``/monitor`` at whichever worker a fresh connection reaches count every row exactly once
  (within the publication interval: polled for at most 3 s);
- feedback sent to any worker joins predictions made by either;
- SIGTERM drains both workers, loses no accepted request, and the supervisor exits 0;
- a worker killed with SIGKILL is replaced in its slot, serving goes on throughout, and the
  fleet's counters carry on from where they were.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import ServerProcess, StartServer
from tests.integration.support import copy_models, penguin, wait_serving, worker_pids

CONVERGE_SECONDS = 3.0
"""A worker publishes every 0.5 s; every other worker's view is complete within this."""


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """One request on a connection of its own, so the kernel may hand it to either worker."""
    return httpx.post(url + path, json=body, timeout=20, headers={"connection": "close"})


def predict_many(url: str, requests: list[list[dict[str, Any]]], threads: int = 8) -> list[httpx.Response]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda rows: post(url, "/v1/models/penguins:predict", {"instances": rows}), requests))


def fresh_scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with httpx.Client(base_url=url, timeout=10, headers={"connection": "close"}) as client:
        return scrape(client)


def converged(url: str, value: Callable[[dict[Any, float]], float], want: float, scrapes: int = 6) -> list[float]:
    """Poll fresh scrapes until one reads ``want``, then read ``scrapes`` more (at whichever
    worker each reaches): returns every value read, for the caller to assert on."""
    deadline = time.monotonic() + CONVERGE_SECONDS
    seen = [value(fresh_scrape(url))]
    while seen[-1] != want and time.monotonic() < deadline:
        time.sleep(0.1)
        seen.append(value(fresh_scrape(url)))
    return seen + [value(fresh_scrape(url)) for _ in range(scrapes)]


def predicted(metrics: dict[Any, float]) -> float:
    return sample(metrics, "driftgate_rows_total", model="penguins", version="1", outcome="predicted")


def prefixes(responses: list[httpx.Response]) -> dict[str, list[str]]:
    by_prefix: dict[str, list[str]] = {}
    for r in responses:
        assert r.status_code == 200, r.text[:300]
        for p in r.json()["predictions"]:
            by_prefix.setdefault(p["id"].split("-")[0], []).append(p["id"])
    return by_prefix


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("workers")
    proc = ServerProcess(work / "run", copy_models(work / "models"), args=["--workers", "2"])
    proc.start()
    wait_serving(proc, 2)
    yield proc
    stopped = proc.stop()
    assert stopped.exit_code == 0, stopped.stderr[-2000:]


@pytest.fixture(scope="module")
def served(fleet: ServerProcess) -> dict[str, list[str]]:
    """120 one-row and 20 three-row predictions over fresh connections: ids by prefix."""
    requests = [[penguin(bill_length_mm=35.0 + i % 20)] for i in range(120)]
    requests += [[penguin(body_mass_g=4000.0 + i), penguin(sex="female"), penguin(island="Dream")] for i in range(20)]
    return prefixes(predict_many(fleet.url, requests))


def test_both_workers_serve_and_every_worker_reports_every_row_once(
    fleet: ServerProcess, served: dict[str, list[str]]
) -> None:
    assert len(served) == 2, f"one worker served everything: {list(served)}"
    assert min(len(ids) for ids in served.values()) >= 10, {k: len(v) for k, v in served.items()}
    rows = sum(len(ids) for ids in served.values())
    assert rows == 180
    seen = converged(fleet.url, predicted, rows)
    assert seen[-7:] == [rows] * 7, f"the fleet's predicted rows, scrape after scrape: {seen}"
    assert seen == sorted(seen), f"a counter went back: {seen}"
    metrics = fresh_scrape(fleet.url)
    assert sample(metrics, "driftgate_drift_window_rows", model="penguins", version="1") == rows
    assert sample(metrics, "driftgate_confidence_count", model="penguins", version="1") == rows
    classes = sum(
        v
        for (n, labels), v in metrics.items()
        if n == "driftgate_predicted_class_total" and ("model", "penguins") in labels
    )
    assert classes == rows
    assert sample(metrics, "driftgate_requests_total", model="penguins", reason="ok") == 140
    for _ in range(4):  # /monitor agrees, at whichever worker
        with httpx.Client(base_url=fleet.url, headers={"connection": "close"}) as client:
            snap = client.get("/v1/models/penguins/monitor").json()
        assert snap["rows"]["predicted"] == rows and snap["window"]["rows"] == rows


def test_feedback_to_any_worker_joins_predictions_of_both(fleet: ServerProcess, served: dict[str, list[str]]) -> None:
    ids = [i for group in served.values() for i in group[:15]]
    labels = ["Gentoo"] * len(ids)
    answers = [
        post(
            fleet.url,
            "/v1/models/penguins/feedback",
            {"feedback": [{"id": i, "label": lab} for i, lab in zip(ids, labels, strict=True)]},
        )
        for _ in range(4)
    ]
    # the first answer joins every id, whichever worker issued it; the three repeats (which
    # land on either worker) find them all joined already: first feedback wins, fleet-wide
    bodies = [answer.json() for answer in answers]
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    assert (bodies[0]["matched"], bodies[0]["unknown_id"]) == (len(ids), 0), bodies[0]
    for body in bodies[1:]:
        assert (body["matched"], body["duplicate"], body["unknown_id"]) == (0, len(ids), 0), body
    feedback = converged(
        fleet.url,
        lambda m: sample(m, "driftgate_feedback_total", model="penguins", version="1", outcome="duplicate"),
        3 * len(ids),
    )
    assert feedback[-1] == 3 * len(ids), feedback
    metrics = fresh_scrape(fleet.url)
    assert sample(metrics, "driftgate_feedback_total", model="penguins", version="1", outcome="matched") == len(ids)
    assert sample(metrics, "driftgate_feedback_window_rows", model="penguins", version="1") == len(ids)


def _failure_kind(exc: Exception) -> str:
    """As ``test_lifecycle`` classifies them: only ``cut`` and ``other`` lose an accepted request."""
    text = str(exc)
    if isinstance(exc, httpx.ConnectError):
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        if "complete message body" in text or "incomplete" in text:
            return "cut"
        if "without sending a response" in text:
            return "closed-idle"  # a keep-alive connection closed before it read the request
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return "other"


@pytest.mark.slow
def test_sigterm_drains_both_workers_loses_no_accepted_request_and_exits_0(start_server: StartServer) -> None:
    proc = start_server(args=["--workers", "2"], env={"DRIFTGATE_DRAIN_SECONDS": "5"})
    wait_serving(proc, 2)
    rows = [penguin(bill_length_mm=35.0 + (i % 20)) for i in range(256)]
    outcomes: list[tuple[float, float, int | None, str]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 15

    def load() -> None:  # keep-alive clients: each connection stays with the worker that accepted it
        with httpx.Client(base_url=proc.url, timeout=20) as client:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status, failure = (
                        client.post("/v1/models/penguins:predict", json={"instances": rows}).status_code,
                        "",
                    )
                except httpx.HTTPError as exc:
                    status, failure = None, _failure_kind(exc)
                with lock:
                    outcomes.append((started, time.monotonic(), status, failure))
                if failure == "refused":
                    return

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    while len(outcomes) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    signalled = time.monotonic()
    stopped = proc.stop(signal.SIGTERM, timeout=20)
    for t in threads:
        t.join(timeout=20)
    assert stopped.exit_code == 0 and not stopped.killed, stopped.stderr[-3000:]
    assert stopped.stderr.count("Finished server process") == 2, "both workers drained and finished"
    answered = [o for o in outcomes if o[2] is not None]
    assert all(o[2] == 200 for o in answered), [o for o in answered if o[2] != 200][:5]
    in_flight = [o for o in answered if o[0] < signalled < o[1]]
    assert in_flight, "no request was in flight at the signal: the test did not exercise draining"
    lost = [o for o in outcomes if o[3] in ("cut", "other")]
    assert not lost, f"accepted requests lost: {lost[:5]}"
    early = [o for o in outcomes if o[3] and o[1] < signalled]
    assert not early, f"failures before the signal: {early[:5]}"


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_fleet_carries_on(start_server: StartServer) -> None:
    proc = start_server(args=["--workers", "2"])
    wait_serving(proc, 2)
    first = prefixes(predict_many(proc.url, [[penguin()] for _ in range(60)]))
    assert converged(proc.url, predicted, 60)[-1] == 60
    pids = worker_pids(proc)
    assert len(pids) == 2, pids
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    during = [post(proc.url, "/v1/models/penguins:predict", {"instances": [penguin()]}) for _ in range(20)]
    assert [r.status_code for r in during] == [200] * 20, "the other worker serves while its twin is replaced"
    wait_serving(proc, 3)
    replaced = worker_pids(proc)
    assert len(replaced) == 2 and victim not in replaced, (pids, replaced)
    assert re.search(rf"worker \d \(pid {victim}\) exited unexpectedly", proc.stderr), proc.stderr[-2000:]
    after = prefixes(predict_many(proc.url, [[penguin()] for _ in range(60)]))
    assert set(after) == set(first), "the replacement serves in its predecessor's slot (same id prefix)"
    ids = [i for group in (first, after) for i in group.values() for i in i]
    assert len(set(ids)) == len(ids) == 120, "no id issued twice across the restart"
    total = 60 + 20 + 60
    seen = converged(proc.url, predicted, total)
    assert seen[-7:] == [total] * 7, f"predicted rows after the restart: {seen}"
    feedback = post(
        proc.url, "/v1/models/penguins/feedback", {"feedback": [{"id": i, "label": "Gentoo"} for i in ids]}
    ).json()
    assert feedback["matched"] == 120, "ids issued before the kill still join"
    assert proc.stop().exit_code == 0
