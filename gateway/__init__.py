"""driftgate: a model-serving gateway with built-in input guards and drift monitoring.

The public Python API is the feature spec, shared by training code and the server::

    from gateway import FeatureSpec
    spec = FeatureSpec.fit(data, name="penguins", target="species")
    X = spec.transform(data)
    problems = spec.check(data)
"""

from __future__ import annotations

from gateway.errors import GatewayError, InputRejectedError, SpecError, UsageError
from gateway.spec import FeatureSpec, load_spec, save_spec
from gateway.violations import Violation

__all__ = [
    "FeatureSpec",
    "GatewayError",
    "InputRejectedError",
    "SpecError",
    "UsageError",
    "Violation",
    "__version__",
    "load_spec",
    "save_spec",
]

__version__ = "0.1.0"
