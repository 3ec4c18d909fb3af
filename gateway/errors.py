"""The one error tree of driftgate.

Every failure that driftgate reports to a caller is a ``GatewayError``. The tree::

    GatewayError                    abstract root; never raised directly
    ├── ConfigError                 bad settings at start-up (CLI exit 2)
    ├── UsageError                  a command-line input that cannot be used (CLI exit 2)
    ├── SpecError            422    a feature spec that is invalid or cannot be fitted
    │   └── SpecMismatchError 422   the spec does not match the ONNX model's signature
    ├── ModelInvalidError    422    an ONNX file refused before loading (unsafe, over budget)
    ├── PayloadError         400    a malformed request body
    ├── PayloadTooLargeError 413    a body or batch over the configured limits
    ├── InputRejectedError   422    rows that break the spec; carries every violation
    ├── UnauthorizedError    401    admin endpoint without the right bearer token
    ├── AdminDisabledError   403    admin endpoint called on a server without a token
    ├── ModelNotFoundError   404    no such model or version
    ├── ReviewNotFoundError  404    no such row in the model's review queue
    ├── ReviewAnswerError    422    a review answer with an unknown label or a non-number value
    ├── NotOnThisListenerError 404  an admin endpoint off the admin listener, or the reverse
    ├── ModelConflictError   409    the version exists already
    ├── RolloutError         409    a rollout change that cannot be made (CLI exit 2)
    ├── ModelNotReadyError   503    the model is loading or unloading
    ├── OverloadedError      503    too many inference requests in progress; retry later
    ├── ShuttingDownError    503    a request cut by a forced end of the drain; send it again
    ├── RequestTimeoutError  408    the client did not send its request in time
    ├── HeaderFieldsTooLargeError 431  a request head over the size or field-count limit
    ├── DeadlineExceededError 504   the inference did not finish within the deadline
    └── InferenceFailedError 500    onnxruntime failed on input that passed the guards

Each class carries four class variables: ``code`` (a stable slug, lower case words joined
by hyphens, that becomes the problem ``type``), ``title``, ``status_hint`` (an HTTP status
as a plain int, the idea of h11's ``error_status_hint``) and ``reason``: how a prediction
request that ended with it is counted in ``driftgate_requests_total``
(``gateway.monitoring.requests.REASONS``). This module knows nothing of HTTP frameworks:
``gateway.http.problems`` maps the tree to problem+json and ``gateway.cli`` to exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.violations import Violation

__all__ = [
    "AdminDisabledError",
    "ConfigError",
    "DeadlineExceededError",
    "GatewayError",
    "HeaderFieldsTooLargeError",
    "InferenceFailedError",
    "InputRejectedError",
    "ModelConflictError",
    "ModelInvalidError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "NotOnThisListenerError",
    "OverloadedError",
    "PayloadError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ReviewAnswerError",
    "ReviewNotFoundError",
    "RolloutError",
    "ShuttingDownError",
    "SpecError",
    "SpecMismatchError",
    "UnauthorizedError",
    "UsageError",
]


class GatewayError(Exception):
    """Root of every error driftgate reports. Abstract: raise a subclass.

    Args:
        detail: one human sentence saying what went wrong and, where it helps, what to do.
        **extra: structured members added to the problem+json body.
    """

    code: ClassVar[str] = "gateway-error"
    title: ClassVar[str] = "Gateway error"
    status_hint: ClassVar[int] = 500
    reason: ClassVar[str] = "failed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def __str__(self) -> str:
        return self.detail


class ConfigError(GatewayError):
    """Settings cannot be used (bad flag, bad environment variable, missing repository).

    Raised only at start-up. Fix the setting named in the detail and start again.
    """

    code = "config-error"
    title = "Invalid configuration"
    status_hint = 500


class UsageError(GatewayError):
    """A command-line input cannot be used: a missing file, an empty file, an unknown column.

    Raised by the command line and the fitting code. Fix the input named in the detail.
    """

    code = "usage-error"
    title = "Unusable input"
    status_hint = 400
    reason = "malformed"


class SpecError(GatewayError):
    """A feature spec is invalid: it does not decode, or its parts contradict each other.

    Fix the spec file (the detail names the field) or fit it again.
    """

    code = "invalid-spec"
    title = "Invalid feature spec"
    status_hint = 422
    reason = "malformed"


class SpecMismatchError(SpecError):
    """The spec and the ONNX model disagree (input width, dtype, or class labels).

    Registration is refused and nothing changes; register a spec that fits the model.
    """

    code = "spec-mismatch"
    title = "Spec does not match model"


class ModelInvalidError(GatewayError):
    """An ONNX file is refused before the server loads it: not a model, external data,
    an operator domain outside the standard ones, an IR version onnxruntime cannot read,
    over the size cap, or over the resource budget (or crashing) in the trial load.

    Registration is refused and nothing changes. The detail is generic (never a path or
    onnxruntime's own text); fix or re-export the model.
    """

    code = "model-invalid"
    title = "Model refused"
    status_hint = 422
    reason = "malformed"


class PayloadError(GatewayError):
    """A request body is malformed (not JSON, wrong shape, wrong tensor datatype).

    The client should fix its request; the detail names the JSON path where known.
    """

    code = "malformed-request"
    title = "Malformed request"
    status_hint = 400
    reason = "malformed"


class PayloadTooLargeError(GatewayError):
    """A request is over a configured limit (body bytes or rows per request).

    The client should split the batch; the limits are in the detail.
    """

    code = "payload-too-large"
    title = "Payload too large"
    status_hint = 413
    reason = "too_large"


class InputRejectedError(GatewayError):
    """Rows break the feature spec. Carries every violation, not only the first.

    Nothing of the request reached the model. The client should fix or drop the rows
    named in ``violations`` and send again.
    """

    code = "input-rejected"
    title = "Input rejected by the feature spec"
    status_hint = 422
    reason = "rejected"

    def __init__(self, detail: str, violations: Sequence[Violation], **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.violations = list(violations)


class UnauthorizedError(GatewayError):
    """An admin endpoint was called without the right bearer token.

    Send ``Authorization: Bearer <token>`` with the token the server was started with.
    """

    code = "unauthorized"
    title = "Unauthorized"
    status_hint = 401
    reason = "malformed"


class AdminDisabledError(GatewayError):
    """An admin endpoint was called but the server has no admin token, so they are off.

    Start the server with ``DRIFTGATE_ADMIN_TOKEN`` (or ``--admin-token``) to enable them.
    """

    code = "admin-disabled"
    title = "Admin endpoints are disabled"
    status_hint = 403
    reason = "malformed"


class ModelNotFoundError(GatewayError):
    """No model (or no such version of it) is registered under the requested name.

    List the served models with ``driftgate models`` or ``GET /v2/repository/index``.
    """

    code = "model-not-found"
    title = "Model not found"
    status_hint = 404
    reason = "not_found"


class ReviewNotFoundError(GatewayError):
    """No row with this id waits in the model's review queue: it was answered already, left
    the full queue, or never needed a review. List the queue with
    ``GET /v1/models/{name}/reviews``."""

    code = "review-not-found"
    title = "Review not found"
    status_hint = 404
    reason = "not_found"


class ReviewAnswerError(GatewayError):
    """A review answer the model cannot take: a label it does not know, or a value that is
    not a finite number. Nothing was recorded; the row stays in the queue."""

    code = "invalid-review-answer"
    title = "Invalid review answer"
    status_hint = 422
    reason = "malformed"


class NotOnThisListenerError(GatewayError):
    """The endpoint is served on the other listener: with an admin listener
    (``--admin-port``), the admin endpoints are answered only there, and the admin
    listener answers nothing else but the health probes."""

    code = "not-found"
    title = "Not found"
    status_hint = 404
    reason = "not_found"


class ModelConflictError(GatewayError):
    """A registration names a version that exists already. Versions are immutable.

    Register under a new version number.
    """

    code = "model-conflict"
    title = "Model version exists"
    status_hint = 409
    reason = "malformed"


class RolloutError(GatewayError):
    """A rollout change that cannot be made: a version that is not registered, a candidate
    equal to the primary, a share outside (0, 1], nothing to promote or roll back.

    Nothing was changed. Fix the command (``driftgate rollout NAME status`` shows the state).
    """

    code = "rollout-refused"
    title = "Rollout change refused"
    status_hint = 409
    reason = "malformed"


class ModelNotReadyError(GatewayError):
    """The model exists but is not ready (loading, warming up or unloading).

    Retry after the time in ``Retry-After``.
    """

    code = "model-not-ready"
    title = "Model not ready"
    status_hint = 503
    reason = "not_ready"


class OverloadedError(GatewayError):
    """The server is at its concurrency cap (``max_concurrency``): answered at once, with
    ``Retry-After``, instead of queueing without bound. Nothing was predicted."""

    code = "overloaded"
    title = "Server overloaded"
    status_hint = 503
    reason = "overloaded"


class ShuttingDownError(GatewayError):
    """The server ended its drain early (a second SIGTERM, or the drain bound) while this
    request was still being answered. Nothing is known of its outcome: send it again, to
    another replica (``Retry-After``)."""

    code = "shutting-down"
    title = "Server shutting down"
    status_hint = 503
    reason = "not_ready"


class RequestTimeoutError(GatewayError):
    """The client did not send its request head or body within the read deadline."""

    code = "request-timeout"
    title = "Request timeout"
    status_hint = 408
    reason = "timeout"


class HeaderFieldsTooLargeError(GatewayError):
    """A request head over the limits (its size, or its number of header fields). The
    connection is closed after the answer."""

    code = "header-fields-too-large"
    title = "Request header fields too large"
    status_hint = 431
    reason = "too_large"


class DeadlineExceededError(GatewayError):
    """The inference did not finish within ``request_timeout_seconds``. Its late result
    is discarded: not answered, not counted as predicted, no prediction ids."""

    code = "deadline-exceeded"
    title = "Deadline exceeded"
    status_hint = 504
    reason = "timeout"


class InferenceFailedError(GatewayError):
    """onnxruntime failed on rows that had passed the guards. A server-side fault.

    Raised with ``raise ... from exc`` so the original error stays in the logs.
    """

    code = "inference-failed"
    title = "Inference failed"
    status_hint = 500
