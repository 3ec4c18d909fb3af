"""The route table: which requests are the hot endpoints, which are admin, and how a path
is spelled.

Every part of the HTTP edge that must recognise a request reads this one table: the
protocol's direct path (``gateway.http.protocol``), the raw ASGI front
(``gateway.http.fastpath``), the listener split (admin plane vs data plane) and the OpenAPI
document (``gateway.http.openapi``). None of them tests a path by itself.

Paths are compared in the **canonical spelling** Litestar routes by (``canonical``: one
leading slash, no trailing slash, runs of slashes folded into one), and the raw front
hands Litestar the canonical path it matched. So ``//v1/models/m:predict/`` is the same
request as ``/v1/models/m:predict`` everywhere: served once, through the one dispatcher,
admitted, counted and drained like any other, and an admin endpoint is an admin endpoint
however its path is spelled.

Adding a hot endpoint: a ``HotRoute`` row in ``HOT_ROUTES`` naming its codec, a module of
``gateway.codecs``; its Litestar declaration and its OpenAPI operation follow from the row (``gateway.http.predict``, ``gateway.http.openapi``).
See the README's contributor section.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.codecs import V1, V2, Codec

__all__ = [
    "HOT_ROUTES",
    "PROBES",
    "HotRoute",
    "Target",
    "canonical",
    "hot_route",
    "is_admin_route",
    "is_probe",
]

_SLASHES = re.compile(r"//+")


def canonical(path: str) -> str:
    """``path`` as Litestar routes it: one leading slash, none trailing, no empty segment
    (``litestar.utils.normalize_path``; a property test keeps the two equal)."""
    if "//" not in path and (len(path) < 2 or path[-1] != "/") and path[:1] == "/":
        return path  # the common spelling: nothing to fold
    return _SLASHES.sub("/", "/" + path.strip("/"))


class Target(NamedTuple):
    """What a hot path names: the model, and the version text when one is pinned."""

    name: str
    version: str | None


class HotRoute(NamedTuple):
    """A prediction endpoint: ``POST <prefix><name>[/versions/<v>]<suffix>``.

    It matches the canonical paths its Litestar declaration matches, no more and no fewer (a
    property test keeps them equal); a suffix that ends a segment (``:predict``) may follow
    an empty name or version, which then names no model (404)."""

    codec: Codec
    """How its bodies are read and its answers written (``gateway.codecs``)."""
    prefix: str
    suffix: str
    templates: tuple[str, ...]
    """The same paths as Litestar templates, for its declaration (``gateway.http.predict``)."""
    summary: str

    def target(self, path: str) -> Target | None:
        """The model and version ``path`` (canonical) names, or None if it is not this route.

        A name or version that holds a slash does not match: the route's segments are fixed."""
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        end = len(path) - len(self.suffix)
        if end < len(self.prefix):
            return None  # prefix and suffix overlap: "/v2/models/infer"
        name, sep, version = path[len(self.prefix) : end].partition("/versions/")
        if "/" in name or (sep and "/" in version):
            return None
        return Target(name, version if sep else None)


HOT_ROUTES: tuple[HotRoute, ...] = (
    HotRoute(
        V1,
        "/v1/models/",
        ":predict",
        ("/v1/models/{target:str}", "/v1/models/{name:str}/versions/{target:str}"),
        "Guard, transform and predict V1 records (the default version, or one pinned)",
    ),
    HotRoute(
        V2,
        "/v2/models/",
        "/infer",
        ("/v2/models/{name:str}/infer", "/v2/models/{name:str}/versions/{version:str}/infer"),
        "V2 inference: guard, transform and predict input tensors (JSON or binary tensor data)",
    ),
)
"""Every prediction endpoint, answered by the raw front through the dispatcher."""

PROBES: dict[str, str] = {"/v2/health/live": "live", "/v2/health/ready": "ready", "/metrics": "metrics"}
"""``GET`` endpoints the raw front answers itself, never refused (health probes, scrapes)."""

_HEALTH = ("/v2/health/live", "/v2/health/ready")


def hot_route(method: str, path: str) -> tuple[HotRoute, Target] | None:
    """The prediction endpoint a request is for, and its target; None for any other request.

    ``path``: canonical (``canonical``)."""
    if method != "POST":
        return None
    for route in HOT_ROUTES:
        target = route.target(path)
        if target is not None:
            return route, target
    return None


def is_probe(method: str, path: str) -> bool:
    """True for a health probe (answered on either listener, never refused)."""
    return method == "GET" and path in _HEALTH


def is_admin_route(method: str, path: str) -> bool:
    """True for the admin endpoints: ``PUT`` and ``GET /v1/models/{name}/versions/{version}``,
    ``PUT /v1/models/{name}/rollout`` and everything under ``/v2/repository/``, however the
    path is spelled."""
    path = canonical(path)
    if path.startswith("/v2/repository/"):
        return True
    if method == "GET":
        return path.startswith("/v1/models/") and path.count("/") == 5 and path.split("/")[4] == "versions"
    return method == "PUT" and path.startswith("/v1/models/") and ("/versions/" in path or path.endswith("/rollout"))
