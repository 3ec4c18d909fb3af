"""What the integration and reliability tests (and ``bench/memory_amplification.py``) share
and no fixture owns: a free port, a Prometheus scrape, raw HTTP/1.1 exchanges whose bytes
matter, and a process's memory read from ``/proc``. Each module is small and stands alone;
the server process itself is ``tests/integration/conftest.ServerProcess``.
"""
