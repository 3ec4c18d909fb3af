"""The command line's data files: CSV, TSV and Parquet through pyarrow, the hand-written
fallback reader, file lines in ``check``, decisions in ``fit-spec``, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import palmerpenguins
import pandas as pd
import pytest

from gateway.cli import EXIT_USAGE, EXIT_VIOLATIONS, main
from gateway.datafile import read_columns, row_lines
from gateway.spec import load_spec

PENGUINS_CSV = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


@pytest.fixture
def no_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if pyarrow were not installed: ``import pyarrow`` fails."""
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)


def fit(path: Path, out: Path, *extra: str) -> int:
    return main(["fit-spec", str(path), "--name", "p", "--target", "species", "-o", str(out), *extra])


def test_tsv_and_parquet_fit_the_same_spec_as_csv(tmp_path: Path) -> None:
    (tmp_path / "p.tsv").write_text(PENGUINS_CSV.read_text().replace(",", "\t"))
    # pyarrow-backed columns keep whole numbers with gaps as integers, as the CSV has them
    pd.read_csv(PENGUINS_CSV, dtype_backend="pyarrow").to_parquet(tmp_path / "p.parquet")
    for source in (PENGUINS_CSV, tmp_path / "p.tsv", tmp_path / "p.parquet"):
        assert fit(source, tmp_path / f"{source.suffix[1:]}.yaml") == 0
    csv_spec = load_spec(tmp_path / "csv.yaml")
    assert len(csv_spec.features) == 7
    assert load_spec(tmp_path / "tsv.yaml") == csv_spec
    assert load_spec(tmp_path / "parquet.yaml") == csv_spec


def test_the_fallback_reader_reads_as_pyarrow_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_arrow = read_columns(PENGUINS_CSV)
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    without = read_columns(PENGUINS_CSV)
    assert list(without) == list(with_arrow)
    for name in with_arrow:
        assert list(without[name]) == list(with_arrow[name]), name
    assert fit(PENGUINS_CSV, tmp_path / "fallback.yaml") == 0
    monkeypatch.undo()
    assert fit(PENGUINS_CSV, tmp_path / "arrow.yaml") == 0
    assert load_spec(tmp_path / "fallback.yaml") == load_spec(tmp_path / "arrow.yaml")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_pyarrow: None) -> None:
    (tmp_path / "p.parquet").write_bytes(b"PAR1 not really")
    assert fit(tmp_path / "p.parquet", tmp_path / "x.yaml") == EXIT_USAGE
    assert "reading Parquet needs pyarrow: pip install 'driftgate[data]'" in capsys.readouterr().err


def test_fit_spec_prints_one_line_per_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = pd.read_csv(PENGUINS_CSV).reset_index(names="penguin_id")
    frame.to_csv(tmp_path / "p.csv", index=False)
    assert fit(tmp_path / "p.csv", tmp_path / "p.yaml") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "left out 'penguin_id': it looks like an identifier (named so, and unique in each of 344 rows) (keep it with --keep penguin_id)"
    assert out[1:] == [
        "'island': no gaps in 344 rows, too few to rule out gaps of up to 0.87%: a missing value is imputed",
        (
            "'island': closed vocabulary (0 of 3 values seen once and 0 twice in 344 rows, Good-Turing P(unseen) = 0.00%, "
            "at most 0.00%): an unseen value is refused"
        ),
        (
            "'sex': closed vocabulary (0 of 2 values seen once and 0 twice in 333 rows, Good-Turing P(unseen) = 0.00%, "
            "at most 0.00%): an unseen value is refused"
        ),
        "'year': no gaps in 344 rows, too few to rule out gaps of up to 0.87%: a missing value is imputed",
        out[-1],
    ]
    assert out[-1].startswith("fitted spec 'p' on 344 rows: 7 features -> 10 model inputs")
    assert fit(tmp_path / "p.csv", tmp_path / "kept.yaml", "--keep", "penguin_id", "--bounds", "year=2000:2030", "--missing", "observed") == 0
    kept = load_spec(tmp_path / "kept.yaml")
    assert "penguin_id" in kept.feature_names
    year = next(f for f in kept.features if f.name == "year")
    assert (year.min, year.max) == (2000, 2030)
    assert year.missing == "reject"  # --missing observed: no gaps in training, so none allowed


def test_progress_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fit(PENGUINS_CSV, tmp_path / "p.yaml", "--progress") == 0
    err = capsys.readouterr().err
    assert "reading " in err and "read 344 rows x 8 columns in" in err and "with pyarrow" in err
    assert "fitting 8 columns of 344 rows..." in err and "fitted in" in err


def test_check_reports_file_lines_and_data_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "p.yaml"
    assert fit(PENGUINS_CSV, spec) == 0
    lines = PENGUINS_CSV.read_text().splitlines()
    # a blank line and a quoted cell over two lines: file lines and data rows part ways
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], "", 'Adelie,"Tor\ngersen",39.1,18.7,181,3750,male,2007', lines[2], "Adelie,Mars,39.1,18.7,181,3750,male,2007"]) + "\n")
    assert row_lines(bad) == [2, 4, 6, 7]
    capsys.readouterr()
    assert main(["check", "--spec", str(spec), str(bad)]) == EXIT_VIOLATIONS
    out = capsys.readouterr().out
    assert f"{bad}:4: row 1: island: unseen_category (value: 'Tor\\ngersen')" in out
    assert f"{bad}:7: row 3: island: unseen_category (value: 'Mars')" in out
    assert main(["check", "--spec", str(spec), "--format", "json", str(bad)]) == EXIT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert [(v["line"], v["row"]) for v in report["violations"]] == [(4, 1), (7, 3)]


def test_check_types_a_bad_cell_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "p.yaml"
    assert fit(PENGUINS_CSV, spec) == 0
    lines = PENGUINS_CSV.read_text().splitlines()
    bad = tmp_path / "bad.tsv"
    rows = [lines[0], lines[1], "Adelie,Dream,39.1,xx,181,3750,male,2007", lines[2]]
    bad.write_text("\n".join(r.replace(",", "\t") for r in rows) + "\n")
    capsys.readouterr()
    assert main(["check", "--spec", str(spec), "--format", "json", str(bad)]) == EXIT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert [(v["row"], v["feature"], v["reason"], v["value"]) for v in report["violations"]] == [(1, "bill_depth_mm", "wrong_type", "xx")]


@pytest.mark.parametrize(
    ("case", "content", "message"),
    [
        ("empty file", "", "the data file is empty"),
        ("header only", "island,species\n", "has a header but no rows"),
        ("only the target", "species\nAdelie\nGentoo\n", "the data holds only the target column 'species': there is no feature to fit"),
        ("a column all missing", "x,y,species\n1,,Adelie\n2,NA,Gentoo\n3,,Adelie\n", "column 'y' has no values: all 3 rows are missing (leave it out with --exclude y)"),
        ("a target with one class", "x,species\n1,Adelie\n2,Adelie\n", "target column 'species' has a single class; a classifier needs two or more"),
    ],
)
@pytest.mark.parametrize("reader", ["pyarrow", "fallback"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case: str, content: str, message: str, reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if reader == "fallback":
        monkeypatch.setitem(sys.modules, "pyarrow", None)
    data = tmp_path / "data.csv"
    data.write_text(content)
    out = tmp_path / "spec.yaml"
    assert fit(data, out) == EXIT_USAGE, case
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"driftgate: error: {data}: {message}" if "file" in message or "header" in message else f"driftgate: error: {message}"], case
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [data]


def test_parquet_category_and_text_columns_read_as_strings_with_gaps(tmp_path: Path) -> None:
    frame = pd.DataFrame({"c": pd.Categorical(["a", None, "b", "a"]), "t": ["x", "y", None, "x"], "n": [1.5, None, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "f.parquet")
    columns = read_columns(tmp_path / "f.parquet")
    assert columns["c"] == ["a", None, "b", "a"]
    assert columns["t"] == ["x", "y", None, "x"]
    assert columns["n"] == [1.5, None, 2.0, 3.0]
