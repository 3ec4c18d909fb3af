"""Permutation importance of each feature for one model version, in a limited child process.

The importance of a feature is what the model loses when that feature's column is shuffled
across rows (its values kept, their link to the rest of the row broken): the drop in
accuracy for a classifier, the rise in mean absolute error for a regressor, averaged over
as many shuffles as the time budget allows (at least one). A one-hot category's columns are
shuffled together, as one feature.

The rows are, in order of preference:

- **held-out rows with their labels** (``rows`` and ``labels``: ``register --data``);
- held-out rows without labels, labelled by the model's own predictions;
- ``IMPORTANCE_ROWS`` rows drawn from the spec's baselines (each feature from its training
  distribution, independently of the others), labelled by the model's own predictions.

With the model's own predictions as labels, a classifier's importance is the share of
predictions that shuffling the feature changes; correlations between features are lost in
sampled rows, so the figure says how much the model leans on the feature, not how much
accuracy the feature bought on real data. ``FeatureImportance.basis`` says which it is.

The model runs only in the child (forked from the same fork server as the trial load,
under the same resource limits, ``gateway.model_check.trial``); this process transforms the
rows with the spec and reads a JSON answer. ``timeout`` bounds the whole computation.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gateway.model_check import trial, trial_child
from gateway.spec import BooleanFeature, CategoryFeature, FeatureSpec, NumericBaseline, OneHot

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from numpy.typing import NDArray

__all__ = [
    "BASIS_HELD_OUT",
    "BASIS_SAMPLED",
    "BASIS_UNLABELLED",
    "FeatureImportance",
    "baseline_rows",
    "compute_importance",
    "read_importance",
]

log = logging.getLogger("driftgate.model_check")

IMPORTANCE_ROWS = 1000
IMPORTANCE_SECONDS = 5.0
MAX_REPEATS = 10
"""Shuffles per feature at most (as many as fit in the time budget, at least one)."""
BASIS_HELD_OUT = "held-out rows and their labels"
BASIS_UNLABELLED = "held-out rows, labelled by the model's own predictions"
BASIS_SAMPLED = "rows sampled from the spec's baselines (features drawn independently), labelled by the model's own predictions"


@dataclass(frozen=True)
class FeatureImportance:
    """Per feature, what shuffling it costs the model (see the module docstring)."""

    values: dict[str, float]
    metric: str
    """``accuracy`` (the drop) or ``mae`` (the rise)."""
    basis: str
    rows: int
    repeats: int
    seconds: float

    def to_json(self) -> bytes:
        return msgspec.json.encode(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes) -> FeatureImportance:
        raw = msgspec.json.decode(data)
        return cls(**{k: raw[k] for k in ("values", "metric", "basis", "rows", "repeats", "seconds")})


def read_importance(path: Any) -> FeatureImportance | None:
    """A version's stored importance (``IMPORTANCE_FILE``), or None if it has none (or an
    unreadable one: the version is served without it)."""
    try:
        return FeatureImportance.from_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def baseline_rows(spec: FeatureSpec, n: int, seed: int = 0) -> dict[str, list[Any]]:
    """``n`` rows drawn from the spec's baselines, each feature independently: a category or
    boolean by its training counts, a number by its bin's training share then uniformly in
    the bin (outer bins closed by the observed range, else the allowed one)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for f in spec.features:
        b = f.baseline
        if isinstance(f, CategoryFeature):
            weights = np.asarray(b.counts if b is not None else [1] * len(f.categories), dtype=np.float64)
            picks = rng.choice(len(f.categories), n, p=weights / weights.sum())
            columns[f.name] = [f.categories[i] for i in picks.tolist()]
        elif isinstance(f, BooleanFeature):
            share = (b.counts[1] / max(sum(b.counts), 1)) if b is not None else 0.5
            columns[f.name] = (rng.random(n) < share).tolist()
        else:
            edges = list(b.edges) if isinstance(b, NumericBaseline) else []
            lo = f.observed.min if f.observed is not None else f.min if f.min is not None else (edges[0] if edges else 0.0)
            hi = f.observed.max if f.observed is not None else f.max if f.max is not None else (edges[-1] if edges else 1.0)
            bounds = np.asarray([min(lo, *edges) if edges else lo, *edges, max(hi, *edges) if edges else hi], dtype=np.float64)
            counts = np.asarray(b.counts if isinstance(b, NumericBaseline) else [1], dtype=np.float64)
            if counts.sum() <= 0:
                counts = np.ones_like(counts)
            k = rng.choice(len(counts), n, p=counts / counts.sum())
            values = rng.uniform(bounds[k], bounds[k + 1])
            if f.min is not None or f.max is not None:
                values = np.clip(values, f.min if f.min is not None else -np.inf, f.max if f.max is not None else np.inf)
            columns[f.name] = np.round(values).tolist() if type(f).__name__ == "IntegerFeature" else values.tolist()
    return columns


def _groups(spec: FeatureSpec) -> list[tuple[str, list[int]]]:
    """Each feature's columns of the transformed matrix."""
    out, at = [], 0
    for f in spec.features:
        width = 1
        if isinstance(f, CategoryFeature) and isinstance(f.transform, OneHot):
            width = len(f.categories) + (1 if f.other else 0)
        out.append((f.name, list(range(at, at + width))))
        at += width
    return out


def compute_importance(
    model: bytes,
    spec: FeatureSpec,
    rows: Any = None,
    labels: Sequence[Any] | None = None,
    *,
    n: int = IMPORTANCE_ROWS,
    seed: int = 0,
    timeout: float = IMPORTANCE_SECONDS,
) -> FeatureImportance | None:
    """Permutation importance of every feature of ``spec`` for ``model`` (ONNX bytes).

    Args:
        rows: held-out rows (records, columns or a DataFrame; those the spec refuses are
            left out); None: ``n`` rows drawn from the spec's baselines (``baseline_rows``).
        labels: their true labels (classifiers) or values (regressors); None: the model's
            own predictions stand in.

    Returns None (and logs why) when the child cannot answer within ``timeout``: the model
    is still served, its drift simply not weighted by importance.
    """
    from gateway.table import to_columns

    if rows is None:
        rows, labels, basis = baseline_rows(spec, n, seed), None, BASIS_SAMPLED
    else:
        basis = BASIS_HELD_OUT if labels is not None else BASIS_UNLABELLED
    checked = spec.guards.check(to_columns(rows, spec.feature_names, spec.guards.ignored))
    matrix = spec.transformer.apply(checked.columns, checked.n_rows)
    keep = ~checked.rejected if checked.rejected is not None else None  # rows the spec refuses are left out
    classification = spec.output is not None and spec.output.task == "classification"
    truth: list[Any] | None = None
    if labels is not None:
        if classification:
            assert spec.output is not None
            index = {label: i for i, label in enumerate(spec.output.labels)}
            truth = [index[str(v).lower() if isinstance(v, bool) else str(v)] for v in labels]
        else:
            truth = [float(v) for v in labels]
        if len(truth) != checked.n_rows:
            raise ValueError(f"{len(truth)} labels for {checked.n_rows} rows")
        if keep is not None:
            truth = [t for t, kept in zip(truth, keep.tolist(), strict=True) if kept]
    if keep is not None:
        matrix = matrix[keep]
    if not len(matrix):
        log.info("feature importance not computed: no row passes the spec")
        return None
    request = msgspec.msgpack.encode(
        {
            "model": model,
            "spec": msgspec.json.encode(spec),
            "matrix": np.ascontiguousarray(matrix, dtype=np.float32).tobytes(),
            "shape": list(matrix.shape),
            "groups": _groups(spec),
            "truth": truth,
            "classification": classification,
            "seconds": timeout * 0.8,
            "seed": seed,
        }
    )
    context = trial._fork_server()
    if context is None:
        log.info("feature importance needs multiprocessing's fork server; not computed")
        return None
    t0 = time.monotonic()
    with trial._TRIAL_SLOTS, tempfile.TemporaryDirectory(prefix="driftgate-importance-") as cwd:
        ours, theirs = context.Pipe()
        child = context.Process(  # type: ignore[attr-defined]
            target=run_in_fork, args=(theirs, cwd), name="driftgate-importance", daemon=True
        )
        try:
            child.start()
            theirs.close()
            ours.send_bytes(request)
            raw = ours.recv_bytes(1 << 20) if ours.poll(timeout) else None
        except (EOFError, OSError):
            raw = None
        finally:
            ours.close()
            child.join(max(0.0, t0 + timeout - time.monotonic()))
            if child.exitcode is None:
                child.kill()
                child.join()
            child.close()
    if raw is None:
        log.info("feature importance not computed: the child did not answer within %.0f s", timeout)
        return None
    answer = json.loads(raw)
    if not answer.get("ok"):
        log.info("feature importance not computed: %s", str(answer.get("log"))[:500])
        return None
    return FeatureImportance(
        values={k: float(v) for k, v in answer["values"].items()},
        metric="accuracy" if classification else "mae",
        basis=basis,
        rows=int(matrix.shape[0]),
        repeats=int(answer["repeats"]),
        seconds=time.monotonic() - t0,
    )


# --- the child ----------------------------------------------------------------------------


def _score(runtime: Any, matrix: NDArray[np.float32], truth: NDArray[Any], classification: bool) -> float:
    out = runtime.run(matrix)
    if classification:
        return float((out.probabilities.argmax(axis=1) == truth).mean())
    return float(np.abs(out.values - truth).mean())


def _importance(request: dict[str, Any]) -> dict[str, Any]:
    from gateway.runtime import OnnxRuntime

    deadline = time.monotonic() + float(request["seconds"])
    runtime = OnnxRuntime(request["model"], msgspec.json.decode(request["spec"], type=FeatureSpec))
    matrix = np.frombuffer(request["matrix"], dtype=np.float32).reshape(request["shape"]).copy()
    classification = bool(request["classification"])
    if request["truth"] is not None:
        truth = np.asarray(request["truth"])
    else:
        out = runtime.run(matrix)
        truth = np.asarray(out.probabilities).argmax(axis=1) if classification else np.asarray(out.values)
    base = _score(runtime, matrix, truth, classification)
    rng = np.random.default_rng(int(request["seed"]))
    sums = {feature: 0.0 for feature, _ in request["groups"]}
    repeats = 0
    while repeats < 1 or (repeats < MAX_REPEATS and time.monotonic() < deadline):
        order = rng.permutation(len(matrix))
        for feature, columns in request["groups"]:
            shuffled = matrix.copy()
            shuffled[:, columns] = matrix[order][:, columns]
            score = _score(runtime, shuffled, truth, classification)
            sums[feature] += (base - score) if classification else (score - base)
        repeats += 1
    return {"ok": True, "values": {k: v / repeats for k, v in sums.items()}, "repeats": repeats, "base": base}


def run_in_fork(conn: Connection, cwd: str) -> None:
    """The child's entry point: the trial's limits, the request from the pipe, JSON back."""
    trial_child._limit_self()
    os.chdir(cwd)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    try:
        request = msgspec.msgpack.decode(conn.recv_bytes())
        answer = _importance(request)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which serves the model without it
        answer = {"ok": False, "log": f"{type(exc).__name__}: {exc}"[:2000]}
    conn.send_bytes(json.dumps(answer).encode())
    conn.close()
