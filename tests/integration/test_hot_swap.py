"""A version registered under load takes over without one failed request.

Eight client threads predict as fast as they can (bounded in time and count) while
version 2 is registered over HTTP. Every answer must be a 200; answers switch from
version 1 to version 2 and, once any client has seen version 2, no request started
later may be answered by version 1.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

from tests.integration.conftest import StartServer
from tests.integration.support import ADMIN_TOKEN, PENGUINS_MODEL, PENGUINS_SPEC, admin, bundle, penguin

THREADS = 8
MAX_REQUESTS_PER_THREAD = 1500
MAX_SECONDS = 20.0
"""Safety bound only: a normal run takes about a second and a half."""
WARM_REQUESTS = 150
"""Answers from version 1 to wait for before registering."""
AFTER_SWAP_SECONDS = 0.75


@dataclass(frozen=True)
class Answer:
    thread: int
    started: float
    ended: float
    status: int
    version: str | None
    error: str | None = None


def test_hot_swap_under_load_fails_no_request(start_server: StartServer) -> None:
    proc = start_server(env={"DRIFTGATE_ADMIN_TOKEN": ADMIN_TOKEN})
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + MAX_SECONDS
    rows = [
        penguin(),
        penguin(island="Dream", bill_length_mm=49.0, bill_depth_mm=18.5, flipper_length_mm=195.0, body_mass_g=3800.0),
    ]

    def load(thread: int) -> None:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for _ in range(MAX_REQUESTS_PER_THREAD):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                try:
                    response = client.post("/v1/models/penguins:predict", json={"instances": rows})
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    answer = Answer(thread, started, time.monotonic(), response.status_code, version)
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and asserted on
                    answer = Answer(thread, started, time.monotonic(), 0, None, repr(exc))
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=load, args=(i,), name=f"load-{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    try:
        while len(answers) < WARM_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.01)
        put_started = time.monotonic()
        with httpx.Client(base_url=proc.url, timeout=30) as admin_client:
            registered = admin_client.put(
                "/v1/models/penguins/versions/2",
                files=bundle(PENGUINS_MODEL.read_bytes(), PENGUINS_SPEC.read_bytes()),
                headers=admin(),
            )
        swapped_at = time.monotonic()
        while time.monotonic() < deadline and (
            time.monotonic() < swapped_at + AFTER_SWAP_SECONDS
            or sum(a.started > swapped_at for a in answers) < 2 * THREADS
        ):
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)

    assert registered.status_code == 201, registered.text
    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    versions = {a.version for a in answers}
    assert versions == {"1", "2"}, f"answers came from versions {versions}"
    before = [a for a in answers if a.ended < put_started]
    assert len(before) >= WARM_REQUESTS and all(a.version == "1" for a in before)
    after = [a for a in answers if a.started > swapped_at]
    assert after and all(a.version == "2" for a in after), "once registered, version 2 is the default"
    first_v2_seen = min(a.ended for a in answers if a.version == "2")
    went_back = [a for a in answers if a.started > first_v2_seen and a.version != "2"]
    assert not went_back, f"{len(went_back)} requests started after version 2 answered still got version 1"
    for thread in range(THREADS):
        own = [a.version for a in sorted(answers, key=lambda a: a.started) if a.thread == thread]
        assert own == sorted(own), f"thread {thread} went back to version 1"
    assert len(answers) >= WARM_REQUESTS + THREADS
