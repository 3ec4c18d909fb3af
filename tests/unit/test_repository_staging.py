"""Staging folders left by a registration killed mid-write are recognised and removed;
a live writer's folder never is (catalogue B2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.repository import (
    STAGING,
    STAGING_GRACE_SECONDS,
    STAGING_STALE_SECONDS,
    ModelRepository,
)


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staged(root: Path, name: str) -> Path:
    folder = root / STAGING / name
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"half a model")
    return folder


def test_a_dead_writers_folder_is_removed_once_past_the_grace(tmp_path: Path, dead_pid: int) -> None:
    repo = ModelRepository(tmp_path)
    folder = _staged(tmp_path, f"penguins-2-p{dead_pid}-abc_123")
    now = time.time()
    assert repo.clean_staging(now) == []  # young: its writer may live in another PID namespace
    assert folder.exists()
    assert repo.clean_staging(now + STAGING_GRACE_SECONDS + 1) == [folder.name]
    assert not folder.exists()


def test_a_live_writers_folder_stays_until_it_is_stale(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    folder = _staged(tmp_path, f"penguins-2-p{os.getpid()}-xyz")
    now = time.time()
    assert repo.clean_staging(now + STAGING_GRACE_SECONDS + 60) == []
    assert folder.exists()
    assert repo.clean_staging(now + STAGING_STALE_SECONDS + 1) == [folder.name]
    assert not folder.exists()


def test_unrecognised_entries_are_removed_once_past_the_grace(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    legacy = _staged(tmp_path, "penguins-2-k3j4h5")  # an older release's name: no writer id
    stray = tmp_path / STAGING / "stray-file"
    stray.write_bytes(b"x")
    assert sorted(repo.clean_staging(time.time() + STAGING_GRACE_SECONDS + 1)) == sorted([legacy.name, stray.name])
    assert list((tmp_path / STAGING).iterdir()) == []


def test_no_staging_folder_is_nothing_to_clean(tmp_path: Path) -> None:
    assert ModelRepository(tmp_path).clean_staging() == []


def test_a_registration_leaves_no_staging_folder_and_names_its_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = ModelRepository(tmp_path)
    seen: list[str] = []
    real_rename = os.rename

    def spy(src: str | Path, dst: str | Path) -> None:
        seen.append(Path(src).name)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    entry = repo.add("penguins", 1, b"model", b"spec")
    assert (entry.path / "model.onnx").read_bytes() == b"model"
    assert list((tmp_path / STAGING).iterdir()) == []
    assert len(seen) == 1 and f"-p{os.getpid()}-" in seen[0], seen
    # the folder of a writer still running (this process) is never taken for abandoned
    _staged(tmp_path, seen[0])
    assert repo.clean_staging(time.time() + STAGING_GRACE_SECONDS + 1) == []
