"""What a guard reports about one bad cell: the row, the feature, the reason, the value.

A leaf module: the guards create ``Violation`` values, the error tree carries them, and
the HTTP layer encodes them into the problem+json body unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

__all__ = ["ACTIONS", "REASONS", "Action", "Reason", "Violation"]

Reason = Literal[
    "missing",
    "wrong_type",
    "not_finite",
    "below_min",
    "above_max",
    "unseen_category",
    "unknown_feature",
]
"""Why a cell was refused. The closed set of the contract; metrics label by it."""

REASONS: tuple[Reason, ...] = get_args(Reason)

Action = Literal["reject", "clip", "flag"]
"""What the gateway did about the violation: refused the row, clipped the value into the
domain and predicted, or predicted as sent and marked the row."""

ACTIONS: tuple[Action, ...] = get_args(Action)


class Violation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One bad cell.

    ``row`` counts from 0 in the order the request sent its rows. ``value`` is the value as
    sent (``None`` when the field was absent), truncated when it is a long string.
    """

    row: int
    """Index of the row in the request (0-based)."""
    feature: str
    """The feature (or, for ``unknown_feature``, the unexpected field) concerned."""
    reason: Reason
    """One of the contract's reasons."""
    value: Any
    """The value as sent, or ``None`` when absent. Required, so always on the wire (the
    contract's four members are always present; only ``action`` is left out when it is
    the default ``reject``)."""
    action: Action = "reject"
    """What was done: ``reject`` (the default, omitted on the wire), ``clip`` or ``flag``."""
