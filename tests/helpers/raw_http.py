"""HTTP/1.1 on a bare socket, for requests whose bytes matter (httpx would normalise a
target such as ``..`` or refuse a malformed head)."""

from __future__ import annotations

import socket

__all__ = ["raw_exchange", "raw_request", "read_response"]


def raw_exchange(port: int, data: bytes, *, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is on a fresh loopback connection and read one HTTP/1.1 answer.

    Returns (status, headers with lower-case names, body). The body is read up to its
    Content-Length, or to the end of the connection when there is none.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def raw_request(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    extra_headers: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """``raw_exchange`` of one request, ``target`` on the wire exactly as given, with
    ``Content-Length`` and ``Connection: close`` (then ``extra_headers``, each line ending
    in CRLF)."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode("latin-1")
    return raw_exchange(port, head + extra_headers + b"\r\n" + body)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer read from ``sock`` (see ``raw_exchange``)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection before an answer: {buffer[:200]!r}")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body if length < 0 else body[:length]
