"""Who is calling: the bearer key maps to a tenant; admin keys guard /admin.

Client keys come from the policy file (``auth.api_keys``) and, when ``auth.key_store.enabled``, from the
key store (``gateway.keys``), whose active keys each process holds in memory by hash and reloads every
``auth.key_store.refresh_s`` seconds (``gateway.keys.refresh``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config import Policy
from gateway.errors import AuthenticationError, PermissionDenied
from gateway.keys.store import StoredKey, hash_key


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("api-key") or None


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity behind a request: a key (its public id) and its tenant, with the key's own limits."""

    key_id: str
    tenant: str
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    source: str = "policy"


_OPEN = Caller(key_id="open", tenant="default", source="open")


class KeyRing:
    def __init__(self, policy: Policy) -> None:
        self._tenants = {k.key: k.tenant for k in policy.auth.api_keys}
        self._policy_callers = {k.key: Caller(key_id="pk_" + hashlib.sha256(k.key.encode()).hexdigest()[:12],
                                              tenant=k.tenant) for k in policy.auth.api_keys}
        self._admin = list(policy.auth.admin_keys)
        self._store: dict[str, Caller] = {}
        self.store_enabled = policy.auth.key_store.enabled
        self.open = not self._tenants and not self.store_enabled

    def set_store_keys(self, keys: Mapping[str, StoredKey]) -> None:
        """Replace the key store's keys (hash -> row); called by the refresher."""
        self._store = {h: Caller(key_id=k.key_id, tenant=k.tenant, rpm=k.rpm, tpm=k.tpm,
                                 budget_usd=k.budget_usd, source="store") for h, k in keys.items()}

    def _lookup(self, key: str) -> Caller | None:
        found = self._policy_callers.get(key)
        if found is None and self._store:
            found = self._store.get(hash_key(key))
        return found

    def identify(self, headers: Mapping[str, str]) -> Caller:
        """The caller; raises AuthenticationError (401) for a missing or unknown key."""
        if self.open:
            return _OPEN
        key = bearer(headers)
        if key is None:
            raise AuthenticationError("Missing API key: send it as 'Authorization: Bearer <key>'.",
                                      code="missing_api_key")
        caller = self._lookup(key)
        if caller is None:
            raise AuthenticationError("Incorrect API key provided.")
        return caller

    def tenant(self, headers: Mapping[str, str]) -> str:
        """The caller's tenant; raises AuthenticationError (401) for a missing or unknown key."""
        return self.identify(headers).tenant

    def is_client_key(self, key: str) -> bool:
        return self._lookup(key) is not None

    def is_admin(self, headers: Mapping[str, str]) -> bool:
        key = bearer(headers)
        return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in self._admin)

    def require_admin(self, headers: Mapping[str, str]) -> None:
        key = bearer(headers)
        if key is None:
            raise AuthenticationError("Missing admin key.", code="missing_api_key")
        if any(hmac.compare_digest(key.encode(), k.encode()) for k in self._admin):
            return
        if self.is_client_key(key):
            raise PermissionDenied("This key may not use the admin API.")
        raise AuthenticationError("Incorrect API key provided.")
