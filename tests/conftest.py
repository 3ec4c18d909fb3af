"""Shared test configuration.

Hypothesis runs the ``ci`` profile by default: enough examples to find the usual edge
cases, few enough that the whole suite stays well under a minute, and no per-example
deadline (a slow CI machine must not turn into a flaky test). Pick another profile with
``HYPOTHESIS_PROFILE=thorough`` when hunting bugs locally.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.register_profile("quick", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
