"""Tests that need a program from a system package (Prometheus, Chromium).

On a developer's machine without the package such a test is skipped, saying what to
install. In CI (``DRIFTGATE_REQUIRE_SYSTEM_TESTS=1``, set by ``.ci/run``, which installs
the packages) a missing program fails the test instead: CI must never go green by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require_binary"]


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; skip (or, in CI, fail) when it is not installed."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (Debian package {package!r}: apt-get install {package})"
    if os.environ.get("DRIFTGATE_REQUIRE_SYSTEM_TESTS") == "1":
        pytest.fail(message)
    pytest.skip(message)
