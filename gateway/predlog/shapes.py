"""One-row records at the least cost: Struct types made once per model version.

Most requests carry one row, and the writer thread shares the interpreter with the thread
that answers them, so what a one-row record costs to build is what logging costs. A
``Shape`` holds, per logged model version, msgspec Struct types whose fields are the
logged features (and the labels' probabilities): a row becomes ``Row(*cells)``, no dict,
and encodes as the same JSON object. Anything out of the ordinary (a field that is not a
feature, a missing-cell mask, cells in numpy arrays) takes the general path
(``gateway.predlog.rows``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from gateway.predlog.rows import first_row, logged_features
from gateway.table import MatrixColumns

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from gateway.service import Outcome
    from gateway.table import Columns
    from gateway.violations import Violation

__all__ = ["OneRecord", "Shape"]


class OneRecord(msgspec.Struct, tag_field="kind", tag="prediction", gc=False):
    """``records.PredictionRecord`` as encoded from a ``Shape`` (its parts are Structs)."""

    id: str
    time: str
    model: str
    version: int
    inputs: Any
    prediction: Any
    violations: list[Violation]


class _Classified(msgspec.Struct, gc=False):
    label: str
    confidence: float
    probabilities: Any


class _Valued(msgspec.Struct, gc=False):
    value: float


def _row_type(names: tuple[str, ...], kind: str) -> type:
    fields = [f"f{j}" for j in range(len(names))]
    return msgspec.defstruct(kind, [(f, Any) for f in fields], rename=dict(zip(fields, names, strict=True)), gc=False)


class Shape:
    """How the one-row records of one model version are built."""

    __slots__ = ("all_logged", "labels", "model", "names", "picks", "probabilities", "row")

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.names = logged_features(model.spec)
        features = model.spec.feature_names
        self.all_logged = self.names == features
        self.picks = [features.index(n) for n in self.names]
        self.row = _row_type(self.names, "LoggedRow")
        output = model.spec.output
        self.labels = output.labels if output is not None and output.task == "classification" else ()
        self.probabilities = _row_type(self.labels, "Probabilities") if self.labels else None

    def record(self, prediction_id: str, stamp: str, columns: Columns, violations: list[Violation], outcome: Outcome) -> OneRecord:
        """The record of a predicted one-row batch."""
        data = columns.data
        if columns.row is not None and isinstance(data, MatrixColumns) and not columns.unknown:
            row = columns.row
            inputs = self.row(*row) if self.all_logged else self.row(*[row[j] for j in self.picks])
        elif type(data) is dict and not columns.unknown and not columns.missing:
            try:  # numpy cells (a V2 tensor) are made plain by the encoder's hook
                inputs = self.row(*[data[k][0] for k in self.names])
            except KeyError:  # a feature no row sent: the general path leaves it out
                inputs = first_row(columns, self.names)
        else:
            inputs = first_row(columns, self.names)
        said: Any
        if self.probabilities is not None and outcome.probabilities is not None and outcome.label_index is not None:
            p = outcome.probabilities[0].tolist()
            k = int(outcome.label_index[0])
            said = _Classified(self.labels[k], p[k], self.probabilities(*p))
        elif outcome.values is not None:
            said = _Valued(float(outcome.values.reshape(-1)[0]))
        else:
            said = None
        model = self.model
        return OneRecord(prediction_id, stamp, model.name, model.version, inputs, said, violations)
