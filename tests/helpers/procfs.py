"""A process's memory and open descriptors, read from ``/proc`` (Linux).

``reset_peak`` sets the kernel's high-water mark (``VmHWM``) back to the current RSS, so the
peak read after a request is that request's, not the start-up's.
"""

from __future__ import annotations

import os

__all__ = ["open_fds", "reset_peak", "rss_bytes", "status_bytes", "status_kib"]


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def status_bytes(pid: int, field: str) -> int:
    """``status_kib`` in bytes."""
    return status_kib(pid, field) * 1024


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (``VmRSS``), in bytes."""
    return status_bytes(pid, "VmRSS")


def reset_peak(pid: int) -> int | None:
    """Reset the process's peak RSS to its current RSS (``clear_refs``, Linux 4.0+) and
    return that RSS in KiB; None if the kernel refused (the peak then stays the old one)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return status_kib(pid, "VmRSS")


def open_fds(pid: int) -> int:
    """How many file descriptors the process holds open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))
