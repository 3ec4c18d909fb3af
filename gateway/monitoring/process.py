"""``process_*`` and ``python_*`` in ``/metrics``: the server's processes, as every Prometheus
client library exports them (prometheus_client's own collectors).

- **One process** (the default): ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
  ``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
  ``process_start_time_seconds``, ``python_info`` and ``python_gc_*``, without labels.
- **Several workers** (``--workers N``): a scrape reaches one worker, but a target must not
  change with the worker it reaches. So every worker exports the ``process_*`` of *every*
  process of the server, read from ``/proc`` (the workers' process ids come from their
  publications in the state folder, ``gateway.monitoring.fleet``), each labelled ``worker``:
  the slot (``0`` to ``N-1``, kept by a replacement, whose counters then start again as a
  restarted process's do) or ``supervisor``. ``sum without (worker)`` is the whole server's.
  ``python_info`` is the same for all; ``python_gc_*`` is left out, as another process's
  collector cannot be read.

Built with the rest of the scrape, off the event loop (``gateway.monitoring.exposition``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.monitoring.fleet import Fleet

__all__ = ["ProcessMetrics"]


class _FleetProcesses(Collector):
    """``process_*`` of the supervisor and of every worker with a publication, by ``worker``."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._collectors: dict[tuple[str, int], ProcessCollector] = {}

    def _collector(self, worker: str, pid: int) -> ProcessCollector:
        found = self._collectors.get((worker, pid))
        if found is None:
            found = self._collectors[(worker, pid)] = ProcessCollector(pid=lambda: pid, registry=None)
        return found

    def collect(self) -> Iterator[Metric]:
        pids = self.fleet.pids
        if len(pids) < self.fleet.context.workers:  # not read since a worker started
            self.fleet.others()
            pids = self.fleet.pids
        processes = [("supervisor", os.getppid()), *((str(w), pid) for w, pid in sorted(pids.items()))]
        live = {(worker, pid) for worker, pid in processes}
        for key in [k for k in self._collectors if k not in live]:  # a replaced worker's
            del self._collectors[key]
        families: dict[str, Metric] = {}
        for worker, pid in processes:
            for family in self._collector(worker, pid).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for s in family.samples:
                    merged.add_sample(s.name, {**s.labels, "worker": worker}, s.value)
        yield from families.values()


class ProcessMetrics:
    """The ``process_*`` and ``python_*`` text of this server (see the module docstring);
    ``fleet``: this worker's side of the state folder, or None for a single process."""

    def __init__(self, fleet: Fleet | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        PlatformCollector(registry=self.registry)
        if fleet is None:
            ProcessCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        else:
            self.registry.register(_FleetProcesses(fleet))

    def text(self) -> bytes:
        return generate_latest(self.registry)
