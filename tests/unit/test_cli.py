"""The command line's data commands: fit-spec, check, spec-schema, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import palmerpenguins
import pytest

from gateway.cli import EXIT_USAGE, EXIT_VIOLATIONS, build_parser, main
from gateway.spec import CategoryFeature, IntegerFeature, load_spec

ROOT = Path(__file__).resolve().parents[2]
PENGUINS_CSV = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("driftgate: error: ")
    return lines[0]


def test_fit_spec_writes_a_spec_that_loads_and_passes_its_own_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "penguins.yaml"
    assert main(["fit-spec", str(PENGUINS_CSV), "--name", "penguins", "--target", "species", "-o", str(out)]) == 0
    spec = load_spec(out)
    assert spec.output is not None and spec.output.labels == ("Adelie", "Chinstrap", "Gentoo")
    assert isinstance(next(f for f in spec.features if f.name == "year"), IntegerFeature)
    assert spec.digest[:19] in capsys.readouterr().out
    assert main(["check", "--spec", str(out), str(PENGUINS_CSV)]) == 0


def test_a_forced_category_keeps_numeric_looking_csv_cells_as_text(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    assert main(["fit-spec", str(PENGUINS_CSV), "--name", "p", "--target", "species", "--type", "year=category", "-o", str(out)]) == 0
    year = next(f for f in load_spec(out).features if f.name == "year")
    assert isinstance(year, CategoryFeature) and year.categories == ("2007", "2008", "2009")
    assert main(["check", "--spec", str(out), str(PENGUINS_CSV)]) == 0


def test_check_reports_every_bad_cell_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "p.yaml"
    main(["fit-spec", str(PENGUINS_CSV), "--name", "p", "--target", "species", "-o", str(spec)])
    lines = PENGUINS_CSV.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], "Adelie,Mars,39.1,xx,181,3750,male,2007", lines[2]]) + "\n")
    capsys.readouterr()
    assert main(["check", "--spec", str(spec), "--format", "json", str(bad)]) == EXIT_VIOLATIONS
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 3
    assert [(v["row"], v["feature"], v["reason"]) for v in report["violations"]] == [
        (1, "island", "unseen_category"),
        (1, "bill_depth_mm", "wrong_type"),
    ]
    assert main(["check", "--spec", str(spec), str(bad)]) == EXIT_VIOLATIONS
    captured = capsys.readouterr()
    assert "row 1: island: unseen_category" in captured.out
    assert "1 of 3 rows break the spec" in captured.err


@pytest.mark.parametrize("case", ["missing-file", "empty-file", "unknown-target", "missing-spec", "bad-extension"])
def test_failures_print_one_line_and_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    args = {
        "missing-file": ["fit-spec", str(tmp_path / "nope.csv"), "--name", "x", "-o", str(tmp_path / "x.yaml")],
        "empty-file": ["fit-spec", str(empty), "--name", "x", "-o", str(tmp_path / "x.yaml")],
        "unknown-target": ["fit-spec", str(PENGUINS_CSV), "--name", "x", "--target", "nope", "-o", str(tmp_path / "x.yaml")],
        "missing-spec": ["check", "--spec", str(tmp_path / "nope.yaml"), str(PENGUINS_CSV)],
        "bad-extension": ["fit-spec", str(PENGUINS_CSV), "--name", "x", "-o", str(tmp_path / "x.txt")],
    }[case]
    assert main(args) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    expected = {"missing-file": "no such", "empty-file": "empty", "unknown-target": "'nope'", "missing-spec": "no such", "bad-extension": ".yaml"}[case]
    assert expected in line
    assert not (tmp_path / "x.yaml").exists()


def test_every_command_has_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"serve", "fit-spec", "register", "check", "models", "spec-schema"} <= set(commands)
    for name in commands:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", name, "--help"], capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert f"usage: driftgate {name}" in result.stdout
        assert len(result.stdout.splitlines()) > 3


def test_spec_schema_matches_the_published_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-schema"]) == 0
    published = (ROOT / "feature_specs" / "feature-spec.schema.json").read_text()
    assert json.loads(capsys.readouterr().out) == json.loads(published)
