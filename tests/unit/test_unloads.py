"""Unload and load across workers (``gateway.unloads``, ``Gateway.follow_unloads``).

The workers are in-process ``Gateway`` objects sharing one real state folder, as worker
processes would, serving the bundled models; ``follow_unloads`` is called by hand where a
worker's own thread would call it every ``POLL_INTERVAL``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ModelNotFoundError
from gateway.lifecycle import Gateway
from gateway.monitoring.fleet import WorkerContext
from gateway.unloads import UnloadedModels
from gateway.workers import create_state_folder

MODELS = Path(__file__).resolve().parents[2] / "models"

Worker = Callable[[int], Gateway]


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    """``worker(slot)``: a started worker of a two-worker server, once its models are loaded."""
    settings = load_settings({}, repository=str(MODELS), workers=2, prediction_store_size=1024, watch_interval=0)
    folder = create_state_folder(settings, tmp_path)
    started: list[Gateway] = []

    def start(slot: int) -> Gateway:
        gateway = Gateway(settings, WorkerContext(str(folder), "abcdef", slot, 2))
        started.append(gateway)
        gateway.start()
        assert gateway.loaded.wait(60)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def serves(gateway: Gateway, name: str) -> bool:
    try:
        gateway.model_registry.get(name)
    except ModelNotFoundError:
        return False
    return True


def test_the_record_is_one_file_per_unloaded_model(tmp_path: Path) -> None:
    record = UnloadedModels(tmp_path)
    assert record.names() == set()
    record.mark("penguins")
    record.mark("penguins")
    record.mark("digits")
    (record.folder / ".stray.tmp").touch()  # not a model name: ignored
    assert record.names() == {"penguins", "digits"}
    record.lift("penguins")
    record.lift("penguins")
    record.lift("../digits")  # not a model name: nothing is touched
    assert record.names() == {"digits"}
    shutil.rmtree(record.folder)  # the state folder removed under a running worker
    assert record.names() is None


def test_an_unload_at_one_worker_reaches_the_other_and_a_load_brings_it_back(worker: Worker) -> None:
    first, second = worker(0), worker(1)
    assert first.unload("penguins") == [1]
    assert not serves(first, "penguins") and serves(first, "diabetes")
    second.follow_unloads()
    assert not serves(second, "penguins") and serves(second, "diabetes")
    assert second.unloaded == {"penguins"}
    with pytest.raises(ModelNotFoundError):
        second.unload("penguins")  # not served anywhere now

    assert second.load("penguins") == [1]  # the other worker this time
    assert serves(second, "penguins")
    first.follow_unloads()  # reloads on a thread of its own
    deadline = time.monotonic() + 30
    while not serves(first, "penguins"):
        assert time.monotonic() < deadline, "the first worker never loaded penguins again"
        time.sleep(0.01)
    assert first.unloaded == second.unloaded == set()
    first.unload("penguins")
    second.follow_unloads()
    assert second.fleet_unloads is not None
    shutil.rmtree(second.fleet_unloads.folder)  # the record gone: nothing changes
    second.follow_unloads()
    assert second.unloaded == {"penguins"} and not serves(second, "penguins")


def test_a_worker_started_after_an_unload_never_loads_the_model(worker: Worker) -> None:
    first = worker(0)
    first.unload("penguins")
    replacement = worker(1)
    assert replacement.unloaded == {"penguins"}
    assert not serves(replacement, "penguins") and serves(replacement, "diabetes")
    failed = {(f.name, f.version) for f in replacement.model_registry.failures()}
    assert ("penguins", 1) not in failed, "never tried, so never failed"


def test_a_version_that_finishes_loading_after_an_unload_is_not_served(worker: Worker) -> None:
    gateway = worker(0)
    entry = next(e for e in gateway.repository.scan() if e.name == "penguins")
    gateway.unload("penguins")
    with gateway._load_lock:  # what a load under way at the moment of the unload ends with
        gateway._load_entry(entry)
    assert not serves(gateway, "penguins")


def test_a_single_server_keeps_no_record() -> None:
    gateway = Gateway(load_settings({}, repository=str(MODELS), watch_interval=0))
    gateway.start()
    try:
        assert gateway.loaded.wait(60)
        assert gateway.fleet_unloads is None
        assert gateway.unload("penguins") == [1] and gateway.unloaded == {"penguins"}
        assert gateway.load("penguins") == [1] and serves(gateway, "penguins")
    finally:
        gateway.stop()
