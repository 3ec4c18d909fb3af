"""``SpecTransformer``: the feature spec as a scikit-learn transformer.

Training code that lives in a scikit-learn ``Pipeline`` gets the very transform the
server runs::

    from sklearn.pipeline import make_pipeline
    from gateway.estimator import SpecTransformer
    model = make_pipeline(SpecTransformer(name="penguins", target="species"), LogisticRegression())
    model.fit(df, df["species"])
    spec = model[0].spec_          # save it next to the exported ONNX model

scikit-learn is not a dependency of driftgate: the class follows scikit-learn's estimator
protocol (``get_params``/``set_params``, ``fit``/``transform``, ``get_feature_names_out``,
``__sklearn_tags__``) without importing it, unless it is installed, in which case it also
inherits ``BaseEstimator`` so that ``clone``, ``repr`` and tag checks behave natively.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway.spec import FeatureSpec

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["SpecTransformer"]

try:  # pragma: no cover - depends on what is installed
    from sklearn.base import BaseEstimator, TransformerMixin

    _BASES: tuple[type, ...] = (TransformerMixin, BaseEstimator)
except ImportError:  # pragma: no cover
    _BASES = (object,)


class SpecTransformer(*_BASES):  # type: ignore[misc]
    """Fits a ``FeatureSpec`` on ``fit`` (or uses the one given) and applies its transform.

    Args:
        spec: a fitted spec to use as it is; ``fit`` then learns nothing.
        name: the spec's name when fitting one.
        target: the target column, recorded in the fitted spec's output (it may be in ``X``).
        fit_options: more keyword arguments for ``FeatureSpec.fit``.
    """

    def __init__(
        self,
        spec: FeatureSpec | None = None,
        name: str = "model",
        target: str | None = None,
        fit_options: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self.target = target
        self.fit_options = fit_options

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"spec": self.spec, "name": self.name, "target": self.target, "fit_options": self.fit_options}

    def set_params(self, **params: Any) -> SpecTransformer:
        for key, value in params.items():
            if key not in self.get_params():
                raise ValueError(f"invalid parameter {key!r} for SpecTransformer")
            setattr(self, key, value)
        return self

    def fit(self, X: Any, y: Any = None) -> SpecTransformer:
        """Fit the spec on ``X`` (records, columns or a DataFrame). With ``target`` set and
        ``y`` given but the target column absent from ``X``, ``y`` is used as the target."""
        if self.spec is not None:
            self.spec_ = self.spec
            return self
        data = X
        if self.target is not None and y is not None and not _has_column(X, self.target):
            data = _with_column(X, self.target, y)
        self.spec_ = FeatureSpec.fit(data, name=self.name, target=self.target, **(self.fit_options or {}))
        return self

    def transform(self, X: Any) -> NDArray[np.float32]:
        """The model's float32 matrix, exactly as the server computes it."""
        spec: FeatureSpec | None = getattr(self, "spec_", None)
        if spec is None:
            raise ValueError("SpecTransformer is not fitted yet: call fit first")
        return spec.transform(X)

    def fit_transform(self, X: Any, y: Any = None, **_: Any) -> NDArray[np.float32]:
        return self.fit(X, y).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> Any:
        import numpy as np

        return np.asarray(self.spec_.output_columns, dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "spec_")


def _has_column(X: Any, column: str) -> bool:
    if hasattr(X, "columns"):
        return column in X.columns
    if isinstance(X, dict):
        return column in X
    return bool(X) and isinstance(X[0], dict) and column in X[0]


def _with_column(X: Any, column: str, y: Any) -> Any:
    values = list(y.tolist() if hasattr(y, "tolist") else y)
    if hasattr(X, "assign"):  # pandas
        return X.assign(**{column: values})
    if hasattr(X, "with_columns"):  # polars (optional: imported only when a polars frame is given)
        polars = importlib.import_module("polars")
        return X.with_columns(polars.Series(column, values))
    if isinstance(X, dict):
        return {**X, column: values}
    return [{**row, column: v} for row, v in zip(X, values, strict=True)]
