"""What a server process and a supervisor of workers share: the log set-up, the line that
says where they listen, and the signals between a supervisor and its workers.

A leaf module, so that ``gateway.server`` (one server process) and ``gateway.workers`` (the
supervisor, which runs ``gateway.server`` in each worker) need nothing from each other but
that one call.

Signals, with ``--workers N``:

- the supervisor passes the first SIGTERM or SIGINT it gets on to every worker as SIGTERM:
  each drains. A worker may have had the very same signal already: systemd's default
  ``KillMode`` and ``kill -TERM -PGID`` signal every process of the group, and Ctrl-C in a
  terminal sends SIGINT to all of it. So a worker drains on its first SIGTERM or SIGINT and
  takes no later one for an operator's second: it cannot tell the supervisor's copy from
  the group's;
- an operator's second SIGTERM or SIGINT reaches the supervisor (alone or with the group);
  the supervisor then sends ``END_DRAIN`` to every worker, which ends its drain at once,
  as a single server does on its own second SIGTERM.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING

from gateway.listeners import url_host
from gateway.logs import configure_logging

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["END_DRAIN", "announce_listening", "configure_logging"]

END_DRAIN = signal.SIGUSR1
"""Sent by a supervisor to its workers when an operator signals it a second time: end the
drain now (see the module docstring)."""


def announce_listening(log: logging.Logger, settings: Settings, workers: int | None = None) -> None:
    """uvicorn's own "running on" line, for sockets bound here (uvicorn logs it only for
    sockets it binds itself): scripts and tests learn the port from it."""
    fleet = f"; {workers} workers" if workers else ""
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)%s", url_host(settings.host), settings.port, fleet)
