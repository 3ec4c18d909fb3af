"""A small HTTP client for the command line's ``--url`` forms (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from gateway.errors import GatewayError, UsageError

__all__ = ["RemoteError", "fetch_version", "list_remote", "register_remote", "rollout_remote"]

TIMEOUT_SECONDS = 300
"""Registration loads and warms the model on the server before answering."""


class RemoteError(GatewayError):
    """The server answered with an error; ``detail`` is its own message."""

    code = "remote-error"
    title = "The server refused"
    status_hint = 502


def _call(request: urllib.request.Request) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise RemoteError(f"{request.full_url}: {exc.code} {detail}") from None
    except urllib.error.URLError as exc:
        raise UsageError(f"cannot reach {request.full_url}: {exc.reason}") from None


def list_remote(url: str) -> dict[str, Any]:
    return _call(urllib.request.Request(url.rstrip("/") + "/v1/models"))


def fetch_version(url: str, token: str | None, name: str) -> dict[str, Any]:
    """The served (default) version of ``name`` on a server: its number, model bytes, spec
    text and baseline (``GET /v1/models/{name}/versions/{v}``, an admin endpoint)."""
    if not token:
        raise UsageError("--url needs an admin token to read a served model: pass --token or set DRIFTGATE_ADMIN_TOKEN")
    described = _call(urllib.request.Request(f"{url.rstrip('/')}/v1/models/{name}"))
    version = str(described["version"])
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{name}/versions/{version}", headers={"Authorization": f"Bearer {token}"}
    )
    return _call(request)


def register_remote(
    url: str,
    token: str | None,
    name: str,
    version: str | None,
    model: bytes,
    spec: bytes,
    spec_filename: str,
    data: tuple[bytes, str] | None = None,
    query: str = "",
) -> dict[str, Any]:
    if not token:
        raise UsageError("--url needs an admin token: pass --token or set DRIFTGATE_ADMIN_TOKEN")
    if version is None:
        listing = list_remote(url)
        served = [int(v) for m in listing["models"] if m["name"] == name for v in m["versions"]]
        version = str(max(served, default=0) + 1)
    boundary = uuid.uuid4().hex
    parts = []
    files = [("model", "model.onnx", model, "application/octet-stream"), ("spec", spec_filename, spec, "application/yaml")]
    if data is not None:
        files.append(("data", data[1], data[0], "application/octet-stream"))
    for field, filename, content, ctype in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
            + content
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/v1/models/{name}/versions/{version}{query}",
        data=body,
        method="PUT",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {token}"},
    )
    return _call(request)


def rollout_remote(url: str, token: str | None, name: str, action: dict[str, Any] | None) -> dict[str, Any]:
    """``GET /v1/models/{name}/rollout`` (``action`` None), else ``PUT`` of ``action``."""
    target = f"{url.rstrip('/')}/v1/models/{urllib.parse.quote(name, safe='')}/rollout"
    if action is None:
        return _call(urllib.request.Request(target))
    if not token:
        raise UsageError("--url needs an admin token: pass --token or set DRIFTGATE_ADMIN_TOKEN")
    body = json.dumps(action).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    return _call(urllib.request.Request(target, data=body, method="PUT", headers=headers))
