"""The prediction log through a real server: ``serve --log-dir`` and ``driftgate export``.

- ``export --labelled`` gives exactly the rows that got feedback, with their targets, and
  ``fit-spec`` and pandas read what it wrote;
- a log folder on a full or a read-only filesystem (a tmpfs mounted in a mount namespace
  of the server's own) costs no prediction: every answer is 200 and the drops are counted;
- SIGKILL of a two-worker server under load: every finished file reads back whole, each
  worker wrote files of its own, no record is duplicated, and the next start finishes the
  files the dead workers left.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.predlog.records import FINISHED, PARTIAL, read_members
from gateway.samples import sample_records
from gateway.spec import load_spec
from tests.helpers.metrics import sample, scrape
from tests.integration.conftest import StartServer
from tests.integration.support import PENGUINS_SPEC, V2_ROW, cli, predict

SPEC = load_spec(PENGUINS_SPEC)


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["predictions"]]


def _records(folder: Path, stream: str = "predictions") -> list[dict[str, Any]]:
    """Every record under ``folder``: finished files strictly, partial ones to their last whole member."""
    out: list[dict[str, Any]] = []
    for path in sorted(folder.rglob(f"{stream}-*")):
        data = path.read_bytes()
        chunks = [gzip.decompress(data)] if path.name.endswith(FINISHED) else list(read_members(data))
        out += [msgspec.json.decode(line) for chunk in chunks for line in chunk.splitlines()]
    return out


def test_export_labelled_gives_the_rows_with_feedback_and_their_targets(start_server: StartServer, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    log_dir = tmp_path / "log"
    server = start_server(args=["--log-dir", str(log_dir)])
    rows = sample_records(SPEC, 60, seed=11)
    ids: list[str] = []
    with server.client() as client:
        for i in range(20):
            ids += _ids(predict(client, "penguins", [rows[i]]))  # one-row requests
        ids += _ids(predict(client, "penguins", rows[20:60]))  # and a batch
        rejected = predict(client, "penguins", [dict(rows[0], island="Atlantis")])
        assert rejected.status_code == 422
        v2 = client.post("/v2/models/penguins/infer", json={"inputs": V2_ROW})  # the other features imputed
        assert v2.status_code == 200, v2.text
        v2_id = next(o["data"][0] for o in v2.json()["outputs"] if o["name"] == "id")
        truth = {ids[i]: ("Adelie", "Chinstrap", "Gentoo")[i % 3] for i in range(0, 60, 4)}
        feedback = client.post("/v1/models/penguins/feedback", json={"feedback": [{"id": k, "label": v} for k, v in truth.items()]})
        assert feedback.json()["matched"] == len(truth)
    assert server.stop().exit_code == 0

    out = tmp_path / "labelled.csv"
    done = cli("export", "penguins", "--log-dir", log_dir, "--labelled", "-o", out)
    assert done.returncode == 0, done.stderr
    assert f"exported {len(truth)} predictions" in done.stdout
    table = pd.read_csv(out)
    assert dict(zip(table["id"], table["species"], strict=True)) == truth
    sent = {i: row for i, row in zip(ids, rows, strict=True)}
    for record in table.to_dict("records"):
        assert record["island"] == sent[record["id"]]["island"]
        assert record["body_mass_g"] == pytest.approx(sent[record["id"]]["body_mass_g"])
    assert set(table["version"]) == {1}

    everything = tmp_path / "all.jsonl"
    assert cli("export", "penguins", "--log-dir", log_dir, "-o", everything).returncode == 0
    exported = [msgspec.json.decode(line) for line in everything.read_bytes().splitlines()]
    assert [r["id"] for r in exported] == [*ids, v2_id]
    assert exported[-1]["island"] == "Biscoe" and exported[-1]["year"] == 2008 and exported[-1]["bill_length_mm"] is None

    spec = tmp_path / "retrained.yaml"
    fitted = cli(
        "fit-spec", out, "--name", "penguins", "--target", "species",
        "--exclude", "id", "--exclude", "version", "--exclude", "prediction", "-o", spec,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert load_spec(spec).feature_names == SPEC.feature_names


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs mount namespaces (unshare -rm) for a tmpfs of the test's own")
@pytest.mark.parametrize(("mount", "error"), [("size=32k", "ENOSPC"), ("ro,size=1m", "EROFS")], ids=["full", "read-only"])
def test_a_full_or_read_only_log_folder_costs_no_prediction(
    start_server: StartServer, tmp_path: Path, mount: str, error: str
) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    repository = tmp_path / "models"
    subprocess.run(["cp", "-r", str(Path(PENGUINS_SPEC).parents[2]), str(repository)], check=True)
    serve = [
        sys.executable, "-m", "gateway.cli", "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--port", "0", "--log-dir", str(log_dir), "--log-file-bytes", "4096",
    ]  # fmt: skip
    script = f'mount -t tmpfs -o {mount} tmpfs "$0" && exec "$@"'
    server = start_server(repository=repository, command=["unshare", "-rm", "sh", "-c", script, str(log_dir), *serve])
    rows = sample_records(SPEC, 40, seed=5)
    rounds = 12
    with server.client() as client:
        for round_ in range(rounds):
            for row in rows:
                assert predict(client, "penguins", [row]).status_code == 200
            time.sleep(0.05 if round_ % 4 else 0.3)  # let the writer fill the disk meanwhile
        time.sleep(0.5)
        metrics = scrape(client)
    dropped = sample(metrics, "driftgate_log_records_total", model="penguins", outcome="dropped")
    written = sample(metrics, "driftgate_log_records_total", model="penguins", outcome="written")
    assert dropped > 0
    assert dropped + written == rounds * len(rows)
    if mount.startswith("ro"):
        assert written == 0
    else:
        assert written > 0
    assert f"cannot write ({error}" in server.stderr


@pytest.mark.slow
def test_sigkill_under_load_leaves_whole_files_and_no_duplicate(start_server: StartServer, tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    args = ["--log-dir", str(log_dir), "--log-file-bytes", "8192", "--workers", "2"]
    server = start_server(args=args, new_group=True)
    rows = sample_records(SPEC, 20, seed=7)
    stop = threading.Event()
    answered: list[str] = []

    def load() -> None:
        while not stop.is_set():  # a new connection now and then, so that both workers get some
            with server.client() as client:
                for _ in range(10):
                    try:
                        answered.extend(_ids(predict(client, "penguins", rows[: 1 + len(answered) % 20])))
                    except httpx.TransportError:
                        return

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(list(log_dir.rglob(f"*{FINISHED}"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    server.send_group(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    server.wait(10)

    left = list(log_dir.rglob(f"*{PARTIAL}"))
    assert left, "the killed workers' open files"
    finished = list(log_dir.rglob(f"predictions-*{FINISHED}"))
    assert len(finished) >= 6
    for path in finished:
        gzip.decompress(path.read_bytes())  # whole: a torn file raises
    records = _records(log_dir)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a record written twice"
    assert len(set(ids) & set(answered)) > 0.9 * len(ids), "the rows logged are the rows answered"
    writers = {p.name.split("-")[2] for p in log_dir.rglob("predictions-*")}
    assert writers == {i.split("-")[0] for i in ids}, "each worker writes files of its own"
    assert len(writers) == 2

    again = start_server(repository=server.repository, args=["--log-dir", str(log_dir)])
    again.stop()
    assert not list(log_dir.rglob(f"*{PARTIAL}")), "the next start finishes what the dead left"
    after = [r["id"] for r in _records(log_dir)]
    assert sorted(after) == sorted(ids), "recovery neither loses a whole member nor duplicates one"
