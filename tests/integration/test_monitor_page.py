"""The monitor page as a browser shows it: headless Chromium against the real server.

Chromium asks for ``text/html`` as any browser does, so the plain ``/monitor`` address
must give it the page (not JSON). The screenshot proves the page renders; the DOM that
Chromium built proves what the page shows: the model's name and a drift row per feature.

Needs ``/usr/bin/chromium`` (Debian package ``chromium``): skipped without it, failed
without it under ``DRIFTGATE_REQUIRE_SYSTEM_TESTS=1``.
"""

from __future__ import annotations

import math
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.conftest import ServerProcess
from tests.integration.support import penguin, predict
from tests.system import require_binary

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 2000
PENGUIN_FEATURES = ("island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year")


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    return result


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a PNG, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    chunks = []
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    return chunks


class DriftRows(HTMLParser):
    """Cell texts of every row of ``<table id="drift">``, and the text of title and h1."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.in_drift = False
        self.rows: list[list[str]] = []
        self.text = {"title": "", "h1": ""}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append(tag)
        if tag == "table" and dict(attrs).get("id") == "drift":
            self.in_drift = True
        elif self.in_drift and tag == "tr":
            self.rows.append([])
        elif self.in_drift and tag == "td":
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_drift = False
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.in_drift and self.open and self.open[-1] == "td":
            self.rows[-1][-1] += data
        for tag in self.text:
            if tag in self.open:
                self.text[tag] += data


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    return require_binary(CHROMIUM, "chromium")


@pytest.fixture(scope="module")
def busy_server(chromium_binary: str, server: ServerProcess) -> ServerProcess:
    """The module's server after real traffic: every penguin, a shifted batch, rejections."""
    from palmerpenguins import load_penguins

    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in load_penguins().drop(columns="species").to_dict("records")
    ]
    with server.client() as client:
        for i in range(0, len(rows), 100):
            assert predict(client, "penguins", rows[i : i + 100]).status_code == 200
        # 300 real penguins made heavy (still within the spec's domain): body mass drifts
        rng = np.random.default_rng(7)
        heavy: list[dict[str, Any]] = [{**rows[i], "body_mass_g": float(m)} for i, m in zip(rng.integers(0, len(rows), 300), rng.uniform(6000, 6700, 300), strict=True)]
        assert predict(client, "penguins", heavy).status_code == 200
        assert predict(client, "penguins", [penguin(island="Atlantis")]).status_code == 422
        assert predict(client, "penguins", [penguin(year=2031), penguin()]).status_code == 422
    return server


def test_monitor_page_renders_in_chromium(chromium_binary: str, busy_server: ServerProcess, tmp_path: Path) -> None:
    binary = chromium_binary
    url = f"{busy_server.url}/v1/models/penguins/monitor"

    screenshot = tmp_path / "monitor.png"
    chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    chunks = png_chunks(screenshot.read_bytes())
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height) == (WIDTH, HEIGHT)
    assert depth == 8 and color in (2, 6) and interlace == 0  # 8-bit RGB or RGBA
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + width * (3 if color == 2 else 4))
    assert len(set(pixels[::97])) > 16, "the screenshot is (nearly) blank"

    dom = chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout.decode()
    assert not dom.lstrip().startswith("<html><head></head><body><pre"), "the browser was given JSON, not the page"
    page = DriftRows()
    page.feed(dom)
    assert "penguins" in page.text["title"]
    assert page.text["h1"].startswith("penguins")
    rows = [r for r in page.rows if r]  # the header row has no td
    assert [r[0] for r in rows] == list(PENGUIN_FEATURES)
    by_feature = {r[0]: r for r in rows}
    for name, cells in by_feature.items():
        assert len(cells) == 7, cells  # feature, type, PSI, KS/JS, unseen, missing, status
        assert cells[-1] in ("stable", "moderate", "major"), (name, cells)
        assert math.isfinite(float(cells[2])), (name, cells)
    assert by_feature["body_mass_g"][-1] == "major", by_feature["body_mass_g"]  # the heavy batch
    assert all(cells[-1] != "major" for name, cells in by_feature.items() if name != "body_mass_g"), by_feature
    assert by_feature["island"][1] == "category" and by_feature["year"][1] == "numeric"
    assert "Offline evaluation" in dom and "registered without" in dom  # the bundled version has no held-out figures
