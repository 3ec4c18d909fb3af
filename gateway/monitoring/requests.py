"""Every prediction request counted once, with one reason from a closed set.

``driftgate_requests_total{model, reason}`` answers "how many requests did this model get,
and how did each end", so that after any run (a chaos test, an incident) the counts
reconcile with what clients sent: ``sum by (model)`` is the number of requests that
reached a model's endpoint. ``model`` is a served model's name, or ``_unknown`` when the
path named no served model; ``reason`` is one of ``REASONS``, so no client input can
add a series.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.errors import GatewayError

__all__ = ["REASONS", "UNKNOWN_MODEL", "RequestCounts", "reason_of"]

REASONS = ("ok", "rejected", "malformed", "too_large", "not_found", "not_ready", "overloaded", "timeout", "canceled", "failed")
UNKNOWN_MODEL = "_unknown"


def reason_of(exc: BaseException) -> str:
    """The one reason a failed request is counted under: its error's own ``reason``
    (``gateway.errors``); a client that went away is ``canceled``, anything else ``failed``."""
    if isinstance(exc, GatewayError):
        return exc.reason
    return "canceled" if isinstance(exc, ConnectionError) else "failed"


class RequestCounts(Collector):
    """The counts (updated on the event loop only; read at scrape)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, model: str, reason: str) -> None:
        key = (model, reason)
        self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "driftgate_requests", "Prediction requests (V1 predict, V2 infer), by how they ended.", labels=["model", "reason"]
        )
        for (model, reason), count in sorted(self.counts.items()):
            family.add_metric([model, reason], count)
        yield family
