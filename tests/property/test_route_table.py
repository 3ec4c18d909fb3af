"""The route table (``gateway.http.routes``) against Litestar's own router, on generated
path spellings: a request is a prediction in the raw front exactly when Litestar's
declaration of that route would serve it, and an admin call whenever Litestar would route
it to an admin handler. So no spelling of a path (a doubled,
leading or trailing slash) is served two ways, and no admin action is possible on the
data-plane port by any spelling of its path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.utils import normalize_path

from gateway.config import load_settings
from gateway.http.app import create_app
from gateway.http.routes import HOT_ROUTES, canonical, hot_route, is_admin_route

# Litestar 2.25 deprecates path parameters declared by annotation alone, which its 2.12 floor
# needs; it warns when a route is first resolved
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:litestar")

PREDICT_HANDLERS = {"v1_predict", "v2_predict"}
ADMIN_HANDLERS = {"register", "download", "repository_index", "repository_load", "repository_unload"}


@pytest.fixture(scope="module")
def router() -> Any:
    front = create_app(load_settings({}))
    return front.app.asgi_router


def _handler(router: Any, method: str, path: str) -> str | None:
    """The name of the handler Litestar routes ``method path`` to, or None."""
    try:
        _, handler, *_ = router.handle_routing(path=normalize_path(path), method=method)
    except (NotFoundException, MethodNotAllowedException):
        return None
    return str(handler.handler_name)


SEGMENTS = st.sampled_from(
    ["v1", "v2", "models", "versions", "repository", "index", "load", "unload", "infer", "health", "ready", "live",
     "metrics", "penguins", "penguins:predict", "1", "2:predict", ":predict", "x:predict:predict", "feedback",
     "monitor", "config", "1:predict", "0", "abc", "."]
)


@st.composite
def spellings(draw: st.DrawFn) -> str:
    """A path of known segments, each joined by one or more slashes, maybe one more at either end."""
    segments = draw(st.lists(SEGMENTS, min_size=1, max_size=7))
    path = ""
    for segment in segments:
        path += "/" * draw(st.integers(1, 3)) + segment
    return path + "/" * draw(st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="/ab:%.", max_size=30))
def test_canonical_is_litestars_normalisation(path: str) -> None:
    assert canonical(path) == normalize_path(path)


@settings(max_examples=1500, deadline=None)
@given(spellings(), st.sampled_from(["POST", "PUT", "GET"]))
def test_the_raw_front_and_litestar_agree_on_every_spelling(router: Any, path: str, method: str) -> None:
    handler = _handler(router, method, path)
    hot = hot_route(method, canonical(path))
    if hot is not None:  # the raw front serves it: Litestar would have routed it to the same route
        assert handler == f"{hot[0].codec.name}_predict", (path, handler, hot)
    elif handler in PREDICT_HANDLERS:  # "/v1/models/{target}" also takes "/v1/models/x": refused 404 there
        route = next(r for r in HOT_ROUTES if handler == f"{r.codec.name}_predict")
        assert route.target(canonical(path)) is None, (path, handler)
    admin = is_admin_route(method, path)
    if handler in ADMIN_HANDLERS:
        assert admin, (path, handler)  # an admin action is recognised however it is spelled
    elif admin:
        assert handler is None, (path, handler)  # and wider only where nothing would answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/penguins:predict/"),
        ("POST", "//v1/models/penguins:predict"),
        ("POST", "/v1//models/penguins:predict"),
        ("POST", "/v1/models/penguins/versions/1:predict/"),
        ("POST", "/v2/models/penguins/infer/"),
        ("POST", "/v2/models/penguins/versions/1/infer/"),
        ("PUT", "/v1//models/penguins/versions/2"),
        ("PUT", "//v1/models/penguins/versions/2"),
        ("POST", "/v2//repository/models/penguins/unload"),
    ],
)
def test_the_spellings_a_hostile_pass_found(router: Any, method: str, path: str) -> None:
    handler = _handler(router, method, path)
    assert handler is not None
    if method == "PUT" or "repository" in path:
        assert is_admin_route(method, path)
    else:
        assert hot_route(method, canonical(path)) is not None
