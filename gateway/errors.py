"""One exception tree for everything that can go wrong with a request.

``ClientError`` (4xx) is the caller's fault: never retried, never escalated. ``UpstreamError`` (5xx,
timeouts, overload) is a backend's fault: eligible for a retry on another replica or escalation to the
fallback LLM. Both render as OpenAI's error body in one place (``gateway.app``).
"""

from __future__ import annotations

import re
from typing import Any

_URL = re.compile(r"\b(?:https?|wss?|tcp|unix)://[^\s'\"<>),;]+", re.IGNORECASE)
_HOST_PORT = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost|[\w-]+(?:\.[\w-]+)+):\d{2,5}\b")


def without_addresses(text: str) -> str:
    """``text`` with URLs and host:port pairs replaced by ``<upstream>``: what a client may read of an
    upstream's message."""
    return _HOST_PORT.sub("<upstream>", _URL.sub("<upstream>", text))


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
    """A backend failed; ``backend`` names it. Eligible for retry elsewhere or escalation.

    ``message`` is for the logs and the ledger (it may name replica URLs and quote the upstream); a
    client reads only the route and the short reason (``body``)."""

    status = 502
    type = "api_error"
    code = "upstream_error"

    def __init__(self, message: str, *, backend: str = "", reason: str = "upstream_error",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.backend = backend
        self.reason = reason

    def body(self) -> dict[str, Any]:
        where = f" {self.backend!r}" if self.backend else ""
        return {"error": {"message": f"The backend{where} failed ({self.reason}).", "type": self.type,
                          "param": self.param, "code": self.code}}


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamClientError(GatewayError):
    """A backend refused the request as invalid (its 4xx): the caller's problem. The refusal's text is
    passed on (the client needs it to fix the request) without upstream addresses."""

    type = "invalid_request_error"
    code = "upstream_rejected"

    def body(self) -> dict[str, Any]:
        out = super().body()
        out["error"]["message"] = without_addresses(self.message)
        return out


class NoBackendAvailable(GatewayError):
    """Every target failed. ``message`` names the routes tried (``slm:sql, llm:llm``) and their reasons,
    never addresses or upstream text; ``detail`` (logs and ledger only) has the last upstream message."""

    status = 503
    type = "api_error"
    code = "no_backend_available"

    def __init__(self, message: str, *, detail: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.detail = detail
