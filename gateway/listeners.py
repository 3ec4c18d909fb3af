"""The listening sockets: the data plane, and the optional admin listener.

With ``admin_port`` set, the server listens on a second socket (``admin_host``, by default
the data plane's host) and the admin endpoints (registration, the V2 repository extension)
are answered there and only there: the data-plane port answers them 404, and the admin
port answers nothing but them and the two health probes (``gateway.http.fastpath``; the
route table, ``gateway.http.routes``, says which endpoints are admin). So a
network policy, or binding the admin listener to loopback while the data plane is on the
pod's address, keeps registration away from every client of the model.

One process or several (``gateway.workers``), the sockets are bound here, once, and
handed to the server; the kernel then tells each connection's listener by its local port.
"""

from __future__ import annotations

import logging
import socket

import msgspec

from gateway.config import Settings

__all__ = ["ADMIN_LISTENING", "bind", "open_listeners", "url_host"]

ADMIN_LISTENING = "driftgate admin listener on http://%s:%d"
"""The log line naming the admin listener's address (scripts and tests read the port)."""

log = logging.getLogger("driftgate")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: one the kernel picks), inheritable
    by worker processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections queue from now on, even before the first worker accepts
    sock.set_inheritable(True)
    return sock


def open_listeners(settings: Settings) -> tuple[Settings, list[socket.socket]]:
    """Bind the data-plane socket and, if configured, the admin socket. Returns the settings
    with the ports actually bound (a 0 resolved) and the sockets, data plane first.
    Raises ``OSError`` when an address cannot be bound (nothing is left open then)."""
    sockets = [bind(settings.host, settings.port)]
    try:
        if settings.admin_port is not None:
            sockets.append(bind(settings.admin_host or settings.host, settings.admin_port))
    except OSError:
        sockets[0].close()
        raise
    ports = {"port": sockets[0].getsockname()[1]}
    if len(sockets) > 1:
        ports["admin_port"] = sockets[1].getsockname()[1]
        host = settings.admin_host or settings.host
        log.info(ADMIN_LISTENING, url_host(host), ports["admin_port"])
    return msgspec.structs.replace(settings, **ports), sockets


def url_host(host: str) -> str:
    """``host`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
