"""The checks on a model's bytes alone, before anything loads it: what it may contain
(``check_static``) and whether its cost per call may depend on input values (``variable_cost``)."""

from __future__ import annotations

from gateway.errors import ModelInvalidError
from gateway.model_check.ir_probe import max_ir_version
from gateway.model_check.limits import ALLOWED_DOMAINS
from gateway.model_check.protobuf_scanner import ModelFacts, inspect_model

__all__ = ["VARIABLE_COST_OPS", "check_static", "variable_cost"]


VARIABLE_COST_OPS = frozenset(
    {
        # control flow: how often a body runs is decided by tensor values
        "Loop", "If", "Scan",
        # output sizes set by tensor values, not by the batch's shape
        "ConstantOfShape", "Range", "Tile", "Expand", "NonZero", "Compress", "Unique", "TopK",
        "Resize", "Upsample", "OneHot", "NonMaxSuppression", "StringSplit",
        "SplitToSequence", "SequenceConstruct", "SequenceInsert", "ConcatFromSequence",
    }
)  # fmt: skip
"""Operators that can make one row cost far more than the warm-up measured: a value of
the input (not the batch size) decides how much work a call does. A model using any of them
is never run on the event loop, whatever its warm-up timing (catalogue B10). Ops whose size
inputs are usually constants (Reshape, Slice, Pad) are left out: flagging every model that
has them would send ordinary networks to a thread for nothing."""


def variable_cost(facts: ModelFacts) -> bool:
    """True if the model's cost per call may depend on its input values (``VARIABLE_COST_OPS``)."""
    return not facts.op_types.isdisjoint(VARIABLE_COST_OPS)



def check_static(data: bytes) -> ModelFacts:
    """``inspect_model``, then refuse external data, foreign domains and a too-new IR.

    Raises:
        ModelInvalidError: with a short reason (see the module docstring).
    """
    facts = inspect_model(data)
    if facts.external_data:
        raise ModelInvalidError(
            "the model references external data files; a bundle is one self-contained model file "
            "(save it with every tensor inside)"
        )
    foreign = sorted((facts.opset_domains | facts.node_domains) - ALLOWED_DOMAINS)
    if foreign:
        allowed = ", ".join(sorted(d for d in ALLOWED_DOMAINS if d))
        raise ModelInvalidError(
            f"the model uses operator domain {foreign[0][:60]!r}; only the standard domains are served ({allowed})"
        )
    supported = max_ir_version()
    if facts.ir_version > supported:
        raise ModelInvalidError(
            f"the model's IR version {facts.ir_version} is newer than this onnxruntime supports "
            f"(at most {supported}); save it with ir_version={supported} or lower"
        )
    return facts


# --- asking onnxruntime which IR version it supports ----------------------------------------
