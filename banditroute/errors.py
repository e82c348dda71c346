"""The errors a client can cause, each owning its HTTP status, its machine-readable kind and its log level.

The HTTP layer maps every one of them to ``{"error": kind, "message": ..., "detail"?: ...}`` with its
status, in one place (:mod:`banditroute.http.middleware`); the core raises them without knowing HTTP.

==============================  ======  =========================
class                           status  ``error``
==============================  ======  =========================
:class:`MalformedJSON`          400     ``malformed_json``
:class:`Unauthorized`           401     ``unauthorized``
:class:`UnknownDecision`        404     ``unknown_decision``
:class:`NotFound`               404     ``not_found``
:class:`MethodNotAllowed`       405     ``method_not_allowed``
:class:`RequestTimeout`         408     ``request_timeout``
:class:`IdempotencyConflict`    409     ``idempotency_conflict``
:class:`BodyTooLarge`           413     ``body_too_large``
:class:`ValidationFailed`       422     ``validation_error``
:class:`RoutingError`           422     ``routing_error``
:class:`BudgetExhausted`        429     ``budget_exhausted``
:class:`RateLimited`            429     ``rate_limited``
:class:`Unavailable`            503     ``unavailable``
:class:`UpstreamFailed`         502     ``upstream_error``
==============================  ======  =========================

:class:`Unavailable` is not the client's fault: the log cannot take writes (or did not commit in
time), so the service takes nothing it could not keep; it answers with ``Retry-After``.
:class:`UpstreamFailed` is not the client's fault either: every model the gateway tried failed.

On the OpenAI-compatible paths (``/v1/...``) the same errors take OpenAI's shape,
``{"error": {"message", "type", "code", "param", "detail"?}}``, which OpenAI's SDKs read.

Anything else that escapes a handler is a bug: 500 ``internal_error``, logged with its traceback.
"""

from __future__ import annotations

import logging


class ClientError(Exception):
    """A request the service refuses; subclasses set :attr:`status`, :attr:`kind` and :attr:`log_level`."""

    status = 400
    kind = "bad_request"
    log_level = logging.DEBUG  # the client's mistake, not the operator's: no noise at INFO

    def __init__(self, message: str, detail: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail

    def headers(self) -> dict[str, str]:
        """Extra response headers."""
        return {}

    def body(self) -> dict:
        """The JSON error body."""
        out = {"error": self.kind, "message": self.message}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


class MalformedJSON(ClientError):
    status, kind = 400, "malformed_json"


class Unauthorized(ClientError):
    status, kind = 401, "unauthorized"
    log_level = logging.INFO


class NotFound(ClientError):
    status, kind = 404, "not_found"


class UnknownDecision(ClientError):
    """Feedback for a decision id that is neither held in memory nor in the log."""

    status, kind = 404, "unknown_decision"

    def __init__(self, decision_id: str):
        super().__init__(f"no decision with id {decision_id!r}")
        self.decision_id = decision_id


class MethodNotAllowed(ClientError):
    """A method the path does not serve; the answer lists those it does (``Allow``, RFC 9110)."""

    status, kind = 405, "method_not_allowed"

    def __init__(self, message: str, allowed: set[str] | None = None):
        super().__init__(message)
        self.allowed = sorted(allowed or ())

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class RequestTimeout(ClientError):
    """A request body that did not arrive within ``server.body_timeout_s`` (its connection is closed)."""

    status, kind = 408, "request_timeout"


class IdempotencyConflict(ClientError):
    """An idempotency key repeated on the same decision with a different payload."""

    status, kind = 409, "idempotency_conflict"


class BodyTooLarge(ClientError):
    status, kind = 413, "body_too_large"


class ValidationFailed(ClientError, ValueError):
    """A well-formed body whose values are not acceptable (``detail`` lists the fields)."""

    status, kind = 422, "validation_error"


class RoutingError(ClientError, ValueError):
    """A request the router cannot serve as asked (unknown model, nothing eligible, bad prompt)."""

    status, kind = 422, "routing_error"


class BudgetExhausted(RoutingError):
    """The tenant's budget cannot pay for any eligible model and it refuses (``when_exhausted = "refuse"``);
    ``Retry-After`` says when its period ends."""

    status, kind = 429, "budget_exhausted"
    log_level = logging.INFO

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class RateLimited(BudgetExhausted):
    """Every model that could serve the request is at the rate limit (``rpm``, ``tpm``) the pool gives
    its provider; ``Retry-After`` says when the first of them has room again."""

    status, kind = 429, "rate_limited"


class Unavailable(ClientError):
    """The service cannot keep what it would be given right now (the log is not accepting writes)."""

    status, kind = 503, "unavailable"
    log_level = logging.WARNING

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = int(retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamFailed(ClientError):
    """Every model the gateway tried for a call failed (``detail`` lists the attempts)."""

    status, kind = 502, "upstream_error"
    log_level = logging.WARNING
