"""A person answers the review queue from the monitor page, in headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, JSON messages ended by a NUL byte), so no client library is needed.
It opens the monitor page as any browser (asking for ``text/html``), picks a label in the
form of a queued row and clicks the button; the form posts to the reviews endpoint, which
redirects back to the page. The page it lands on no longer lists the row, and the answer
is feedback: the server's online accuracy moved.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``): skipped without it, failed
without it under ``DRIFTGATE_REQUIRE_SYSTEM_TESTS=1``.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_reviews import ambiguous_rows, review_repository
from tests.system import require_binary


class DevTools:
    """Chromium, headless, and one page of it, over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path) -> None:
        # the child's ends above 9, so that putting them at 3 and 4 cannot overwrite either
        low_in, self._write = os.pipe()
        self._read, low_out = os.pipe()
        to_chromium, from_chromium = fcntl.fcntl(low_in, fcntl.F_DUPFD, 10), fcntl.fcntl(low_out, fcntl.F_DUPFD, 10)
        os.close(low_in)
        os.close(low_out)

        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
            "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        # bash (dash takes one-digit descriptors only) puts the pipe ends at fds 3 and 4, where
        # Chromium looks for them
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_chromium} 4>&{from_chromium}', binary, *flags],
            pass_fds=(to_chromium, from_chromium),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer = b""
        self._next = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next:
                    assert "error" not in answer, answer
                    result: dict[str, Any] = answer["result"]
                    return result
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {method}"
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                chunk = os.read(self._read, 1 << 16)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)["result"]
        return result.get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self._write)
        os.close(self._read)


@pytest.mark.slow
def test_a_person_answers_a_queued_row_from_the_monitor_page(start_server: Any, tmp_path: Path) -> None:
    binary = require_binary("/usr/bin/chromium", "chromium")
    server = start_server(repository=review_repository(tmp_path / "models"))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/models/penguins:predict", json={"instances": ambiguous_rows()})
        assert r.status_code == 200, r.text
        queued = client.get("/v1/models/penguins/reviews").json()["reviews"]
        assert queued
        row = queued[0]
        truth = row["prediction"]["label"]  # the person agrees with the model
        browser = DevTools(binary, tmp_path / "profile")
        try:
            browser.call("Page.navigate", browser.session, url=f"{server.url}/v1/models/penguins/monitor")
            browser.wait_for(f"document.querySelector(\"#reviews tr[data-id='{row['id']}']\") !== null")
            assert browser.evaluate("document.querySelectorAll('#reviews tr[data-id]').length") == len(queued)
            browser.evaluate(
                f"(() => {{ const tr = document.querySelector(\"#reviews tr[data-id='{row['id']}']\");"
                f" tr.querySelector('select').value = {json.dumps(truth)}; tr.querySelector('button').click(); }})()"
            )
            # the form's answer redirects to the page, which no longer lists the row
            browser.wait_for(
                f"document.readyState === 'complete' && document.querySelector('#reviews, h2') !== null"
                f" && document.querySelector(\"tr[data-id='{row['id']}']\") === null"
            )
            text = browser.evaluate("document.body.innerText")
            assert "1 answered" in text and "agreed on 1.000" in text, text[-800:]
        finally:
            browser.close()
        monitor = client.get("/v1/models/penguins/monitor").json()
        assert monitor["feedback"]["matched"] == 1 and monitor["feedback"]["accuracy"] == 1.0
        assert row["id"] not in {r["id"] for r in client.get("/v1/models/penguins/reviews").json()["reviews"]}
