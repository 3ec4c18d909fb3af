"""``/metrics`` read with prometheus_client's own parser, every sample kept."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "sample", "scrape", "series"]

Samples = Mapping[tuple[str, frozenset[tuple[str, str]]], float]
"""``{(sample name, labels): value}``."""


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``GET /metrics`` as ``{(sample name, labels): value}``."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(metrics: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def series(metrics: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in metrics.items() if n == name and want <= set(lab)}
