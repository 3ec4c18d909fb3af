"""``check_model``: the static checks, then the trial load, and a memory of the exact bytes
that passed, so that the same file is not tried twice in one process."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict

from gateway.model_check.limits import PASSED_TRIALS_KEPT
from gateway.model_check.static_checks import check_static, variable_cost
from gateway.model_check.trial import TrialReport, trial_load

__all__ = ["check_model"]

_PASSED: OrderedDict[tuple[bytes, int], TrialReport] = OrderedDict()
_PASSED_LOCK = threading.Lock()


def check_model(data: bytes, intra_op_threads: int = 1) -> TrialReport:
    """``check_static``, then ``trial_load``: everything before the server's own session.

    A file whose exact bytes passed the trial before in this process is not tried again
    (the same bytes load the same way): a repository of copies, a model registered again
    with a new spec, or a ``load`` after an ``unload`` costs no new child. Refusals are
    never remembered, as a timeout may have been the machine's fault.
    """
    facts = check_static(data)
    key = (hashlib.sha256(data).digest(), intra_op_threads)
    with _PASSED_LOCK:
        if key in _PASSED:
            _PASSED.move_to_end(key)
            return _PASSED[key]
    report = dataclasses.replace(trial_load(data, intra_op_threads), variable_cost=variable_cost(facts))
    with _PASSED_LOCK:
        _PASSED[key] = report
        while len(_PASSED) > PASSED_TRIALS_KEPT:
            _PASSED.popitem(last=False)
    return report

