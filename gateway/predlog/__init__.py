"""The prediction log: sampled rows, their predictions or violations, shadow predictions
and feedback, written off the response path as rotated gzip JSON Lines
(``driftgate serve --log-dir``), and read back as training data (``driftgate export``).

- ``gateway.predlog.records``: the record Structs, file names, reading gzip members;
- ``gateway.predlog.rows``: records from a batch's columns and outcome (writer thread);
- ``gateway.predlog.writer``: ``PayloadLog``, the bounded queue and its writer thread;
- ``gateway.predlog.export``: the join of predictions with feedback, to CSV or JSON Lines.
"""

from __future__ import annotations

from gateway.predlog.writer import PayloadLog

__all__ = ["PayloadLog"]
