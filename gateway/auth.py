"""Who is calling: the bearer key maps to a tenant; admin keys guard /admin."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from gateway.config import Policy
from gateway.errors import AuthenticationError, PermissionDenied


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("api-key") or None


class KeyRing:
    def __init__(self, policy: Policy) -> None:
        self._tenants = {k.key: k.tenant for k in policy.auth.api_keys}
        self._admin = list(policy.auth.admin_keys)
        self.open = not self._tenants

    def tenant(self, headers: Mapping[str, str]) -> str:
        """The caller's tenant; raises AuthenticationError (401) for a missing or unknown key."""
        if self.open:
            return "default"
        key = bearer(headers)
        if key is None:
            raise AuthenticationError("Missing API key: send it as 'Authorization: Bearer <key>'.",
                                      code="missing_api_key")
        tenant = self._tenants.get(key)
        if tenant is None:
            raise AuthenticationError("Incorrect API key provided.")
        return tenant

    def require_admin(self, headers: Mapping[str, str]) -> None:
        key = bearer(headers)
        if key is None:
            raise AuthenticationError("Missing admin key.", code="missing_api_key")
        if any(hmac.compare_digest(key, k) for k in self._admin):
            return
        if key in self._tenants:
            raise PermissionDenied("This key may not use the admin API.")
        raise AuthenticationError("Incorrect API key provided.")
