"""A server process's peak resident memory, read from ``/proc`` (Linux).

``reset_peak`` sets the kernel's high-water mark (``VmHWM``) back to the current RSS, so the
peak read after a request is that request's, not the start-up's. Used by
``test_body_memory.py`` and ``bench/memory_amplification.py``.
"""

from __future__ import annotations

__all__ = ["reset_peak", "status_kib"]


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> int | None:
    """Reset the process's peak RSS to its current RSS (``clear_refs``, Linux 4.0+) and
    return that RSS in KiB; None if the kernel refused (the peak then stays the old one)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return status_kib(pid, "VmRSS")
