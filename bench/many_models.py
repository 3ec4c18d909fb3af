"""Hundreds of models on one server: start-up, memory, listing, and what a scrape costs.

Every model is a copy of one 30-feature logistic regression (scikit-learn's bundled
breast_cancer data, a scaler and the regression in one ONNX graph, its spec fitted with
passthrough transforms), registered under its own name (``lr-0000``, ``lr-0001``, ...).

``--models N`` (default 300): the server pinned to one core, wrk and the scraper to the
other. Each model first gets 120 rows (its drift window then publishes PSI). Then, in
alternating rounds on the same server, wrk sends one-row V1 predictions to ``lr-0000`` at
8 connections, with and without a client scraping ``/metrics`` back to back: p50 and p99
of both, and the scrapes' own times, samples and bytes. ``--levels`` repeats the scrape
measurement (and the rounds) with ``--metrics-detail detailed`` and ``full``, and states
the cost per sample, against prometheus_client's own text writer on the same samples.

``--startup N`` (e.g. 1000): seconds until ready, the server's RSS, and the time of
``GET /v1/models``, ``POST /v2/repository/index``, one model's monitor page, one scrape and
the watcher's scan of the repository (in this process, as the loader thread runs it).

    python bench/many_models.py --models 300 --levels
    python bench/many_models.py --startup 1000 --models 0

``--gzip`` scrapes as Prometheus does, with ``Accept-Encoding: gzip`` (the server compresses
on its build thread); without it the body is plain text, sent in pieces.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "examples"))

from http_bench import Server, run_wrk

from gateway.samples import sample_records
from gateway.spec import load_spec

FIRST = "lr-0000"


def build_repository(out: Path, count: int) -> Path:
    """A repository of ``count`` copies of the 30-feature logistic regression."""
    from _export import export_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gateway.registry import ModelRegistry
    from gateway.repository import ModelRepository
    from gateway.service import register_model
    from gateway.spec import FeatureSpec, encode_spec

    repository = ModelRepository(out, create=True)
    if not repository.versions(FIRST):
        frame = load_breast_cancer(as_frame=True).frame
        x = frame.drop(columns="target").to_numpy(dtype="float32")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, frame["target"])
        spec = FeatureSpec.fit(frame, name="lr", target="target", numeric_transform="passthrough")
        register_model(ModelRegistry(), repository, FIRST, 1, export_onnx(model, x.shape[1], "lr"), encode_spec(spec))
    for i in range(1, count):
        target = out / f"lr-{i:04d}"
        if not target.exists():
            shutil.copytree(out / FIRST, target)
    return out


TOKEN = "bench-token"


ACCEPT_GZIP = False
"""``--gzip``: scrapes send ``Accept-Encoding: gzip``, as Prometheus does (bodies stay compressed)."""


def get(url: str, data: bytes | None = None) -> tuple[float, bytes]:
    """Seconds and body of one request (a gzip scrape's body decompressed after the clock stops)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    if ACCEPT_GZIP and url.endswith("/metrics"):
        headers["Accept-Encoding"] = "gzip"
    request = urllib.request.Request(url, data=data, headers=headers)
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as r:
        body = r.read()
        packed = r.headers.get("Content-Encoding") == "gzip"
    seconds = time.perf_counter() - t0
    return seconds, gzip.decompress(body) if packed else body


def samples_in(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def warm(url: str, spec: Any, count: int) -> None:
    """120 rows to every model, so every drift window publishes."""
    body = json.dumps({"instances": sample_records(spec, 120, seed=7)}).encode()
    for i in range(count):
        get(f"{url}/v1/models/lr-{i:04d}:predict", body)


class Scraper:
    """Scrapes ``/metrics`` back to back on a thread until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.times.append(get(f"{self.url}/metrics")[0])

    def __enter__(self) -> Scraper:  # noqa: PYI034 - a plain class, not subclassed
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rounds(server: Server, body: Path, n: int, seconds: float, cpu: str | None) -> dict[str, Any]:
    """Alternating rounds of one-row V1 at c=8, quiet and scraped; medians of each."""
    url = f"{server.url}/v1/models/{FIRST}:predict"
    quiet: list[dict[str, Any]] = []
    scraped: list[dict[str, Any]] = []
    scrapes: list[float] = []
    run_wrk(url, body, "", 8, 2, cpu)  # warm-up
    for r in range(n):
        for mode in ("quiet", "scraped") if r % 2 == 0 else ("scraped", "quiet"):
            if mode == "quiet":
                quiet.append(run_wrk(url, body, "", 8, seconds, cpu))
            else:
                with Scraper(server.url) as scraper:
                    scraped.append(run_wrk(url, body, "", 8, seconds, cpu))
                scrapes += scraper.times

    def med(results: list[dict[str, Any]], key: str) -> float:
        return statistics.median(x[key] for x in results)

    return {
        "quiet_p50_ms": med(quiet, "p50_us") / 1000,
        "quiet_p99_ms": med(quiet, "p99_us") / 1000,
        "scraped_p50_ms": med(scraped, "p50_us") / 1000,
        "scraped_p99_ms": med(scraped, "p99_us") / 1000,
        "p99_per_round_ms": [(q["p99_us"] / 1000, s["p99_us"] / 1000) for q, s in zip(quiet, scraped, strict=True)],
        "quiet_rps": med(quiet, "rps"),
        "scraped_rps": med(scraped, "rps"),
        "scrapes": len(scrapes),
        "scrape_under_load_ms": statistics.median(scrapes) * 1000 if scrapes else None,
    }


def generic_cost(text: bytes, repeat: int = 3) -> float:
    """Seconds per sample of prometheus_client's own writer (``generate_latest``) on the same
    samples, its families already built (the generic path also builds them: more)."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry

    families = list(text_string_to_metric_families(text.decode()))

    class Fixed:
        def collect(self) -> Any:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        generate_latest(registry)
        best = min(best, time.perf_counter() - t0)
    return best / samples_in(text)


def scrape_figures(server: Server, models: int, spec: Any) -> dict[str, Any]:
    """The first scrape after every model got traffic (every version's text is written
    afresh, their buffered rows folded in), then five more a second apart (versions whose
    counts did not move reuse their text)."""
    first = get(f"{server.url}/metrics")[0]
    times = []
    text = b""
    for _ in range(5):
        time.sleep(1.0)  # apart, as Prometheus scrapes: no wait behind the previous build's spacing
        seconds, text = get(f"{server.url}/metrics")
        times.append(seconds)
    samples = samples_in(text)
    best = min(times)
    body = json.dumps({"instances": sample_records(spec, 1, seed=11)}).encode()
    for i in range(models):  # one more row to every model: every version's text is stale again
        get(f"{server.url}/v1/models/lr-{i:04d}:predict", body)
    time.sleep(1.0)
    all_changed = get(f"{server.url}/metrics")[0]
    return {
        "all_changed_scrape_ms": all_changed * 1000,
        "first_scrape_ms": first * 1000,
        "first_us_per_sample": first / samples_in(text) * 1e6,
        "scrape_ms_median": statistics.median(times) * 1000,
        "scrape_ms_best": best * 1000,
        "samples": samples,
        "samples_per_model": samples / models,
        "bytes": len(text),
        "us_per_sample": best / samples * 1e6,
        "prometheus_client_writer_us_per_sample": generic_cost(text) * 1e6,
    }


def scrape_bench(args: argparse.Namespace, repo: Path, workdir: Path) -> list[dict[str, Any]]:
    spec = load_spec(repo / FIRST / "1" / "spec.yaml")
    body = workdir / "one-row.json"
    body.write_text(json.dumps({"instances": sample_records(spec, 1, seed=3)}))
    out = []
    for level in ("standard", "detailed", "full") if args.levels else ("standard",):
        t0 = time.perf_counter()
        server = Server(repo, {"DRIFTGATE_METRICS_DETAIL": level}, args.server_cpu, workdir)
        ready = time.perf_counter() - t0
        try:
            warm(server.url, spec, args.models)
            figures: dict[str, Any] = {"level": level, "models": args.models, "ready_s": ready}
            figures |= scrape_figures(server, args.models, spec)
            if level in ("standard", "full"):
                figures |= rounds(server, body, args.rounds, args.seconds, args.client_cpu)
            figures["rss_mib"] = rss_mib(server.process.pid)
        finally:
            server.stop()
        print(json.dumps(figures), flush=True)
        out.append(figures)
    return out


def startup_bench(args: argparse.Namespace, repo: Path, workdir: Path) -> dict[str, Any]:
    from gateway.repository import ModelRepository

    t0 = time.perf_counter()
    server = Server(repo, {"DRIFTGATE_ADMIN_TOKEN": TOKEN}, args.server_cpu, workdir)
    ready = time.perf_counter() - t0
    try:
        figures: dict[str, Any] = {"models": args.startup, "ready_s": ready, "rss_mib": rss_mib(server.process.pid)}
        for name, url, data in (
            ("v1_models_ms", f"{server.url}/v1/models", None),
            ("repository_index_ms", f"{server.url}/v2/repository/index", b"{}"),
            ("monitor_page_ms", f"{server.url}/v1/models/{FIRST}/monitor", None),
            ("scrape_ms", f"{server.url}/metrics", None),
        ):
            times = []
            for _ in range(5):
                times.append(get(url, data)[0])
                time.sleep(0.5)
            figures[name] = statistics.median(times) * 1000
        repository = ModelRepository(repo)
        scans = []
        for _ in range(5):
            t = time.perf_counter()
            repository.scan()
            scans.append(time.perf_counter() - t)
        figures["watcher_scan_ms"] = statistics.median(scans) * 1000
        figures["rss_mib_after"] = rss_mib(server.process.pid)
    finally:
        server.stop()
    print(json.dumps(figures), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=300, help="models for the scrape benchmark (0: skip it)")
    parser.add_argument("--levels", action="store_true", help="also measure --metrics-detail detailed and full")
    parser.add_argument("--startup", type=int, default=0, help="models for the start-up benchmark (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/scraped round pairs")
    parser.add_argument("--seconds", type=float, default=8, help="seconds of wrk per round")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--gzip", action="store_true", help="scrape with Accept-Encoding: gzip, as Prometheus does")
    parser.add_argument("--workdir", type=Path, help="keep the repositories here (default: a temporary folder)")
    args = parser.parse_args()
    global ACCEPT_GZIP
    ACCEPT_GZIP = args.gzip
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="driftgate-many-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.models:
            scrape_bench(args, build_repository(workdir / f"repo-{args.models}", args.models), workdir)
        if args.startup:
            startup_bench(args, build_repository(workdir / f"repo-{args.startup}", args.startup), workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
