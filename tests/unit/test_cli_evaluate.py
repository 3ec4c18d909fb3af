"""``driftgate evaluate`` and ``driftgate register --data`` on a local repository: the
figures side by side, the gate, what registration stores, and bad input refused in one
line with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import palmerpenguins
import pandas as pd
import pytest

from gateway.cli import EXIT_FAILURE, EXIT_USAGE, EXIT_VIOLATIONS, main

ROOT = Path(__file__).resolve().parents[2]
PENGUINS = ROOT / "models" / "penguins" / "1"
DIGITS = ROOT / "models" / "digits" / "1"
PENGUINS_CSV = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A spec from ``FeatureSpec.fit`` (no confidence baseline, as ``fit-spec`` writes) and a
    deliberately weak model for it: a logistic regression regularised into near-guessing."""
    from sklearn.linear_model import LogisticRegression

    from gateway import FeatureSpec
    from gateway.export import save_model

    data = pd.read_csv(PENGUINS_CSV).dropna()
    spec = FeatureSpec.fit(data, name="penguins", target="species")
    model = LogisticRegression(C=0.002, max_iter=200).fit(spec.transform(data), data["species"].to_numpy(dtype=str))
    folder = tmp_path_factory.mktemp("weak")
    return save_model(model, folder, spec)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "penguins", repo / "penguins")
    return repo


def test_register_with_data_stores_the_figures_and_a_fitted_spec_without_it_says_so(
    repository: Path, fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, spec = fitted
    args = ["register", "penguins", "--model", str(model), "--spec", str(spec), "--repository", str(repository)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "offline" not in out
    note = [line for line in err.splitlines() if line.strip()]
    assert len(note) == 1 and "no output baseline" in note[0] and "--data" in note[0]
    assert not (repository / "penguins" / "2" / "baseline.json").exists()

    assert main([*args, "--data", str(PENGUINS_CSV)]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # the held-out run recorded the output baseline
    stored = json.loads((repository / "penguins" / "3" / "baseline.json").read_bytes())
    assert stored["rows"] == 344 and stored["data"] == "penguins.csv" and stored["calibration"]["rows"] == stored["scored_rows"]
    assert f"accuracy {stored['metrics']['accuracy']:.4f}" in out
    assert sum(stored["output"]["confidence"]["counts"]) == stored["scored_rows"]
    # the permutation importance is computed on the same held-out rows and their labels
    importance = json.loads((repository / "penguins" / "3" / "importance.json").read_bytes())
    assert importance["basis"] == "held-out rows and their labels" and importance["rows"] == stored["scored_rows"]
    drawn = json.loads((repository / "penguins" / "2" / "importance.json").read_bytes())
    assert drawn["basis"] != importance["basis"]


def test_evaluate_compares_with_the_served_version_and_gates(
    repository: Path, fitted: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    weak_model, weak_spec = fitted
    assert main(["register", "penguins", "--model", str(weak_model), "--spec", str(weak_spec), "--repository", str(repository)]) == 0
    capsys.readouterr()
    good = ["--model", str(PENGUINS / "model.onnx"), "--spec", str(PENGUINS / "spec.yaml")]
    # the served version is now the weak one (version 2, the highest): the bundled model beats it
    gate = ["--against", "penguins", "--repository", str(repository), "--require-better", "accuracy"]
    assert main(["evaluate", *good, str(PENGUINS_CSV), *gate, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    row = report["comparison"]["accuracy"]
    assert row["better"] and row["candidate"] > row["against"] + 0.05
    assert report["against"]["version"] == "penguins v2" and report["require_better"]["passed"]
    assert report["common_rows"] == min(report["candidate"]["scored_rows"], report["against"]["scored_rows"])
    # the weak model against the bundled one served: the gate fails with exit 1
    (repository / "penguins" / "rollout.yaml").write_text("primary: 1\n")  # the rollout primary is the served one
    weak = ["--model", str(weak_model), "--spec", str(weak_spec)]
    assert main(["evaluate", *weak, str(PENGUINS_CSV), *gate]) == EXIT_VIOLATIONS
    text = capsys.readouterr().out
    assert "penguins v1" in text and "--require-better accuracy: does NOT hold" in text
    assert "log_loss" in text and "macro_f1" in text


def test_evaluate_lists_the_rows_the_spec_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = pd.read_csv(PENGUINS_CSV)
    data.loc[:3, "island"] = "Atlantis"
    path = tmp_path / "rows.csv"
    data.to_csv(path, index=False)
    assert main(["evaluate", "--model", str(PENGUINS / "model.onnx"), "--spec", str(PENGUINS / "spec.yaml"), str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["candidate"]["refusals"] == [{"feature": "island", "reason": "unseen_category", "rows": 4}]
    assert report["candidate"]["scored_rows"] == 340 and report["against"] is None
    assert set(report["candidate"]["metrics"]) == {"accuracy", "macro_f1", "log_loss"}


def test_bad_input_is_one_line_and_writes_nothing(repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(repository)
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(PENGUINS_CSV).drop(columns=["species"]).to_csv(unlabelled, index=False)
    good = ["--model", str(PENGUINS / "model.onnx"), "--spec", str(PENGUINS / "spec.yaml")]
    cases = [
        (["evaluate", *good, str(unlabelled)], EXIT_USAGE, "no column 'species'"),
        (["evaluate", "--model", str(DIGITS / "model.onnx"), "--spec", str(PENGUINS / "spec.yaml"), str(PENGUINS_CSV)], EXIT_USAGE, "the model takes 64 input columns"),
        (["evaluate", *good, str(PENGUINS_CSV), "--against", "nosuch", "--repository", str(repository)], EXIT_FAILURE, "no model named 'nosuch'"),
        (["evaluate", *good, str(PENGUINS_CSV), "--require-better", "accuracy"], EXIT_USAGE, "needs --against"),
        (["evaluate", *good, str(PENGUINS_CSV), "--against", "penguins", "--repository", str(repository), "--require-better", "r2"], EXIT_USAGE, "one of accuracy"),
        (["register", "penguins", *good, "--repository", str(repository), "--data", str(unlabelled)], EXIT_USAGE, "no column 'species'"),
        (["register", "penguins", "--model", str(DIGITS / "model.onnx"), "--spec", str(PENGUINS / "spec.yaml"), "--repository", str(repository), "--data", str(PENGUINS_CSV)], EXIT_USAGE, "input columns"),
        (["register", "penguins", *good, "--repository", str(repository), "--data", str(tmp_path / "absent.csv")], EXIT_USAGE, "absent.csv"),
    ]  # fmt: skip
    for args, code, words in cases:
        assert main(args) == code, args
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, (args, err)
        assert err.startswith("driftgate: error: ") and words in err, (args, err)
    assert _tree(repository) == before
