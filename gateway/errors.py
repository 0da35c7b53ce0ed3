"""One exception tree for everything that can go wrong with a request.

``ClientError`` (4xx) is the caller's fault: never retried, never escalated. ``UpstreamError`` (5xx,
timeouts, overload) is a backend's fault: eligible for a retry on another replica or escalation to the
fallback LLM. Both render as OpenAI's error body in one place (``gateway.app``).
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class ClientError(GatewayError):
    status = 400
    type = "invalid_request_error"


class InvalidRequest(ClientError):
    code = "invalid_request"


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "request_too_large"


class RateLimited(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """A backend failed; ``backend`` names it. Eligible for retry elsewhere or escalation."""

    status = 502
    type = "api_error"
    code = "upstream_error"

    def __init__(self, message: str, *, backend: str = "", reason: str = "upstream_error",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.backend = backend
        self.reason = reason


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamClientError(GatewayError):
    """A backend refused the request as invalid (its 4xx): the caller's problem, passed on as is."""

    type = "invalid_request_error"
    code = "upstream_rejected"


class NoBackendAvailable(GatewayError):
    status = 503
    type = "api_error"
    code = "no_backend_available"
