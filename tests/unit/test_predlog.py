"""The prediction log in one process: records, sampling, the bounded queue, rotation,
retention, recovery after a crash, and ``driftgate export`` (``gateway.predlog``).

Real models (the bundled penguins classifier and diabetes regressor) answer real batches
through ``gateway.service``; the writer's rounds are run on the test's thread
(``PayloadLog.flush``) so that every assertion sees a settled log.
"""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.cli import main
from gateway.monitoring.feedback import PredictionLog
from gateway.predlog import PayloadLog
from gateway.predlog.export import BLANK
from gateway.predlog.records import FINISHED, PARTIAL, read_members
from gateway.registry import LoadedModel, load_model
from gateway.samples import sample_records
from gateway.service import Outcome, complete, prepare
from gateway.table import records_to_columns
from gateway.violations import Violation

ROOT = Path(__file__).resolve().parents[2] / "models"


def _load(name: str) -> LoadedModel:
    folder = ROOT / name / "1"
    return load_model(name, 1, (folder / "model.onnx").read_bytes(), (folder / "spec.yaml").read_bytes())


@pytest.fixture(scope="module")
def penguins() -> LoadedModel:
    return _load("penguins")


@pytest.fixture(scope="module")
def diabetes() -> LoadedModel:
    return _load("diabetes")


@pytest.fixture
def ring() -> PredictionLog:
    return PredictionLog(1 << 12)


def answer(model: LoadedModel, ring: PredictionLog, rows: list[dict[str, Any]], log: PayloadLog) -> Outcome | None:
    """Predict ``rows`` as the dispatcher does and hand the batch to ``log``."""
    columns = records_to_columns(rows, model.spec.feature_names, model.guards.ignored)
    prepared = prepare(model, columns)
    outcome = None
    if prepared.matrix is not None:
        outcome = complete(model, prepared, model.runtime.run(prepared.matrix), time.perf_counter(), ring)
    log.batch(model, columns, prepared.checked.violations, outcome)
    return outcome


def records(folder: Path, stream: str = "predictions") -> list[dict[str, Any]]:
    """Every record of a log folder's ``stream`` files (finished files read strictly)."""
    out: list[dict[str, Any]] = []
    for path in sorted(folder.rglob(f"{stream}-*")):
        data = path.read_bytes()
        chunks = [gzip.decompress(data)] if path.name.endswith(FINISHED) else list(read_members(data))
        for chunk in chunks:
            out += [msgspec.json.decode(line) for line in chunk.splitlines()]
    return out


def test_rows_predictions_rejections_and_feedback_read_back(
    tmp_path: Path, penguins: LoadedModel, diabetes: LoadedModel, ring: PredictionLog
) -> None:
    log = PayloadLog(tmp_path, "t1")
    good = sample_records(penguins.spec, 5, seed=3)
    outcome = answer(penguins, ring, good, log)
    assert outcome is not None
    bad = [dict(good[0], island="Atlantis"), good[1]]
    assert answer(penguins, ring, bad, log) is None
    reg = answer(diabetes, ring, sample_records(diabetes.spec, 2, seed=1), log)
    assert reg is not None
    log.feedback("penguins", [(outcome.ids[0], "Adelie"), (outcome.ids[2], "Gentoo")])
    log.flush()
    log.stop()

    rows = records(tmp_path / "penguins")
    predicted = [r for r in rows if r["prediction"] is not None]
    assert [r["id"] for r in predicted] == outcome.ids
    assert [r["inputs"] for r in predicted] == good
    labels = penguins.spec.output.labels  # type: ignore[union-attr]
    assert [r["prediction"]["label"] for r in predicted] == [labels[i] for i in outcome.label_index.tolist()]  # type: ignore[union-attr]
    rejected = [r for r in rows if r["prediction"] is None]
    assert [r["inputs"] for r in rejected] == bad
    assert rejected[0]["violations"] == [{"row": 0, "feature": "island", "reason": "unseen_category", "value": "Atlantis"}]
    assert rejected[1]["violations"] == []
    assert len({r["id"] for r in rows}) == len(rows) == 7
    values = [r["prediction"]["value"] for r in records(tmp_path / "diabetes")]
    assert values == pytest.approx(reg.values.tolist())  # type: ignore[union-attr]
    truth = {r["id"]: r["label"] for r in records(tmp_path / "penguins", "feedback")}
    assert truth == {outcome.ids[0]: "Adelie", outcome.ids[2]: "Gentoo"}
    assert not list(tmp_path.rglob(f"*{PARTIAL}")), "stop() finishes every file"
    assert log.counts == {("penguins", "written"): 9, ("diabetes", "written"): 2}
    assert b'driftgate_log_records_total{model="penguins",outcome="written"} 9.0' in log.exposition()


def test_shadow_records_carry_the_primary_id_and_the_candidates_answer_or_refusal(
    tmp_path: Path, penguins: LoadedModel, ring: PredictionLog
) -> None:
    log = PayloadLog(tmp_path, "t1")
    rows = sample_records(penguins.spec, 3, seed=8)
    primary = answer(penguins, ring, rows, log)
    assert primary is not None
    candidate = LoadedModel("penguins", 2, penguins.spec, penguins.runtime)
    columns = records_to_columns(rows, penguins.spec.feature_names, penguins.guards.ignored)
    prepared = prepare(candidate, columns)
    said = complete(candidate, prepared, candidate.runtime.run(prepared.matrix), time.perf_counter(), ring)  # type: ignore[arg-type]
    log.shadow(candidate, primary.ids, said)
    refused = Violation(row=1, feature="island", reason="unseen_category", value="Biscoe")
    log.shadow(candidate, primary.ids, None, [refused])
    log.flush()
    shadows = [r for r in records(tmp_path / "penguins") if r["kind"] == "shadow"]
    assert [r["id"] for r in shadows] == primary.ids * 2
    assert {r["version"] for r in shadows} == {2}
    labels = penguins.spec.output.labels  # type: ignore[union-attr]
    assert [r["prediction"]["label"] for r in shadows[:3]] == [labels[i] for i in said.label_index.tolist()]  # type: ignore[union-attr]
    assert [r["prediction"] for r in shadows[3:]] == [None] * 3
    assert [r["violations"] for r in shadows[3:]] == [[], [msgspec.to_builtins(refused)], []]


def test_a_feature_marked_log_false_is_left_out(tmp_path: Path, penguins: LoadedModel, ring: PredictionLog) -> None:
    features = tuple(msgspec.structs.replace(f, log=f.name != "body_mass_g") for f in penguins.spec.features)
    spec = msgspec.structs.replace(penguins.spec, features=features)
    private = LoadedModel("penguins", 2, spec, penguins.runtime)
    log = PayloadLog(tmp_path, "t1")
    answer(private, ring, sample_records(spec, 3, seed=2), log)
    answer(private, ring, sample_records(spec, 1, seed=4), log)
    log.flush()
    rows = records(tmp_path / "penguins")
    assert len(rows) == 4
    assert all("body_mass_g" not in r["inputs"] and "island" in r["inputs"] for r in rows)


def test_sampling_keeps_a_rows_feedback_and_shadow_with_it(tmp_path: Path, penguins: LoadedModel, ring: PredictionLog) -> None:
    log = PayloadLog(tmp_path, "t1", sample=0.25)
    ids: list[str] = []
    for seed in range(40):
        outcome = answer(penguins, ring, sample_records(penguins.spec, 50, seed=seed), log)
        assert outcome is not None
        ids += outcome.ids
        log.shadow(penguins, outcome.ids, outcome)
    log.feedback("penguins", [(i, "Adelie") for i in ids])
    log.flush()
    rows = records(tmp_path / "penguins")
    logged = {r["id"] for r in rows if r["kind"] == "prediction"}
    assert 0.20 * len(ids) < len(logged) < 0.30 * len(ids)
    assert {r["id"] for r in rows if r["kind"] == "shadow"} == logged
    assert {r["id"] for r in records(tmp_path / "penguins", "feedback")} == logged


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path, penguins: LoadedModel, ring: PredictionLog) -> None:
    log = PayloadLog(tmp_path, "t1", queue_rows=10)
    rows = sample_records(penguins.spec, 1, seed=1)
    for _ in range(25):
        answer(penguins, ring, rows, log)
    assert log.counts == {("penguins", "dropped"): 15}
    log.flush()
    assert log.counts == {("penguins", "dropped"): 15, ("penguins", "written"): 10}
    answer(penguins, ring, rows, log)  # room again once written
    log.flush()
    assert log.counts[("penguins", "written")] == 11


def test_files_rotate_by_size_and_by_day_and_the_oldest_go_beyond_the_bound(
    tmp_path: Path, penguins: LoadedModel, ring: PredictionLog
) -> None:
    log = PayloadLog(tmp_path, "t1", file_bytes=4096, max_bytes=65536)
    for seed in range(60):
        answer(penguins, ring, sample_records(penguins.spec, 40, seed=seed), log)
        log.flush()
    log.stop()
    files = sorted((tmp_path / "penguins").glob(f"predictions-*{FINISHED}"))
    assert len(files) > 3
    total = sum(p.stat().st_size for p in tmp_path.rglob("*.jsonl.gz*"))
    assert total <= 65536
    kept = records(tmp_path / "penguins")
    assert kept and len({r["id"] for r in kept}) == len(kept)
    assert kept[-1]["id"] == f"{ring.prefix}-{ring.issued:x}", "the newest rows are the ones kept"

    day = PayloadLog(tmp_path / "day", "t2", clock=iter([86400.0 * 9 - 1, 86400.0 * 9 + 1]).__next__)
    answer(penguins, ring, sample_records(penguins.spec, 1, seed=1), day)
    day.flush()
    answer(penguins, ring, sample_records(penguins.spec, 1, seed=2), day)
    day.flush()
    assert len(list((tmp_path / "day" / "penguins").glob("predictions-*"))) == 2


def test_recovery_finishes_a_dead_writers_file_whole_and_skips_a_live_one(
    tmp_path: Path, penguins: LoadedModel, ring: PredictionLog
) -> None:
    dead = PayloadLog(tmp_path, "dead")
    for seed in range(3):
        answer(penguins, ring, sample_records(penguins.spec, 10, seed=seed), dead)
        dead.flush()
    (partial,) = (tmp_path / "penguins").glob(f"*{PARTIAL}")
    with open(partial, "ab") as f:  # a member torn by a SIGKILL in the middle of a write
        f.write(gzip.compress(b'{"kind":"prediction"}\n' * 50)[:40])
    live = PayloadLog(tmp_path, "live")
    assert live.recover() == [], "the dead writer's lock is still held (its descriptor is open)"
    for fd in dead.files.open_files():  # the process dies: the kernel drops its locks
        os.close(fd)
    (finished,) = live.recover()
    assert finished.name == partial.name.removesuffix(".partial")
    rows = [msgspec.json.decode(line) for line in gzip.decompress(finished.read_bytes()).splitlines()]
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert live.recover() == []


def test_workers_report_the_fleets_counts_and_a_restarted_worker_continues(
    tmp_path: Path, penguins: LoadedModel, ring: PredictionLog
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    logs = [PayloadLog(tmp_path / "log", f"w{i}") for i in range(2)]
    for i, log in enumerate(logs):
        log.share(state, i, 2)
        answer(penguins, ring, sample_records(penguins.spec, 3 + i, seed=i), log)
        log.stop()
    assert logs[0].fleet_counts() == logs[1].fleet_counts() == {("penguins", "written"): 7}
    again = PayloadLog(tmp_path / "log", "w0b")
    again.share(state, 0, 2)
    answer(penguins, ring, sample_records(penguins.spec, 2, seed=9), again)
    again.stop()
    assert logs[1].fleet_counts() == {("penguins", "written"): 9}
    assert b'outcome="written"} 9.0' in again.exposition()


def _export(*args: str | Path) -> int:
    return main(["export", *map(str, args)])


def test_export_joins_feedback_and_filters(
    tmp_path: Path, penguins: LoadedModel, ring: PredictionLog, capsys: pytest.CaptureFixture[str]
) -> None:
    pd = pytest.importorskip("pandas")
    log_dir = tmp_path / "log"
    log = PayloadLog(log_dir, "t1")
    sent = sample_records(penguins.spec, 30, seed=5)
    outcome = answer(penguins, ring, sent, log)
    assert outcome is not None
    answer(penguins, ring, [dict(sent[0], island="Atlantis")], log)  # rejected: no prediction, never exported
    truth = {outcome.ids[i]: label for i, label in ((3, "Adelie"), (7, "Gentoo"), (11, "Chinstrap"))}
    log.feedback("penguins", list(truth.items()))
    log.flush()

    out = tmp_path / "all.csv"
    assert _export("penguins", "--log-dir", log_dir, "-o", out) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == [*penguins.spec.feature_names, "species", "id", "version", "prediction"]
    assert list(table["id"]) == outcome.ids
    assert table["species"].notna().sum() == 3

    labelled = tmp_path / "labelled.jsonl"
    assert _export("penguins", "--log-dir", log_dir, "--labelled", "-o", labelled) == 0
    rows = [msgspec.json.decode(line) for line in labelled.read_bytes().splitlines()]
    assert {r["id"]: r["species"] for r in rows} == truth
    assert all(r["island"] == sent[outcome.ids.index(r["id"])]["island"] for r in rows)

    future = tmp_path / "future.csv"
    assert _export("penguins", "--log-dir", log_dir, "--since", "2999-01-01", "-o", future) == 0
    assert future.read_text().count("\n") == 1, "the header alone"
    capsys.readouterr()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "--log-dir", "{log}"], "no prediction log of model 'nope' (models logged there: penguins)"),
        (["penguins", "--log-dir", "{missing}"], "no such log folder"),
        (["penguins", "--log-dir", "{file}"], "not a log folder"),
        (["penguins", "--log-dir", "{empty}"], "it holds no prediction log"),
        (["penguins", "--log-dir", "{log}", "--version", "7"], "version 7 was never logged"),
        (["penguins", "--log-dir", "{log}", "--since", "yesterday"], "--since takes an ISO 8601 date"),
    ],
)
def test_export_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path,
    penguins: LoadedModel,
    ring: PredictionLog,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    log = PayloadLog(tmp_path / "log", "t1")
    answer(penguins, ring, sample_records(penguins.spec, 2, seed=1), log)
    log.flush()
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    out = tmp_path / "out" / "x.csv"
    out.parent.mkdir()
    places = {k: str(tmp_path / k) for k in ("log", "missing", "file", "empty")}
    capsys.readouterr()
    assert _export(*[a.format(**places) for a in args], "-o", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    "table",
    [
        [["Biscoe", 45.2, None, True, BLANK, "a-1", 1, "Gentoo"], ["Dream", 1e-05, 3, False, "Adelie", "a-2", 2, "Adelie"]],
        [['say "hi"', 1.5, None, True, BLANK, "a-1", 1, "x,null,y"]],  # an escape: the csv module writes it
        [["x,null,y", None, 2.0, False, BLANK, "a-1", 1, "null"]],  # text that looks like a missing cell
        [["line\nbreak", float("nan"), 1.0, True, "Gentoo", "a-1", 1, "Gentoo"]],
    ],
)
def test_csv_rows_read_back_as_written(tmp_path: Path, table: list[list[Any]]) -> None:
    import csv

    from gateway.predlog.export import _csv_writer

    columns = ["island", "x", "y", "flag", "species", "id", "version", "prediction"]
    path = tmp_path / "out.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        _csv_writer(handle, columns)(table)
    with open(path, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == columns
    expected = [
        ["" if c is None or c is BLANK else str(c).lower() if isinstance(c, bool) else c for c in row] for row in table
    ]
    for got, want in zip(rows, expected, strict=True):
        assert [g.lower() for g in got[3:4]] == want[3:4]
        for g, w in zip(got[:3] + got[4:], want[:3] + want[4:], strict=True):
            assert g == w or float(g) == pytest.approx(float(w), nan_ok=True), (got, want)
