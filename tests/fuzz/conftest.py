"""The fuzz tests drive the real server, with the integration suite's own fixtures.

``server`` (one per module: default settings plus the admin token, on a private copy of
``models/``) and ``start_server`` (a process of the test's own) are defined once, in
``tests/integration/conftest.py``; they are re-exported here so the fuzz tests start the
server exactly as the integration tests do.
"""

from __future__ import annotations

from tests.integration.conftest import server, start_server

__all__ = ["server", "start_server"]
