"""Canonical cache keys.

Two requests share a key exactly when they should share an answer: same tenant namespace, same
endpoint kind, and the same request body once the fields that do not change the answer are dropped
(``stream``, ``user``, the ``cache`` control field, ...). Everything else is kept, including fields this
module has never heard of, because an unknown new OpenAI parameter may well change the output; a
denylist errs on the side of a miss, an allowlist would err on the side of a wrong answer.

The body is normalised before hashing: canonical JSON with sorted keys (so key order and the client's
whitespace do not matter), ``null`` treated as absent at the top level and inside messages, integral
floats written as integers (``0.0`` == ``0``), and a bare ``stop`` string as a one-item list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson

EndpointKind = Literal["chat", "completion"]

IGNORED_FIELDS: frozenset[str] = frozenset({
    "stream",            # delivery, not content: a stream hit replays, a non-stream hit assembles
    "stream_options",    # include_usage only decides whether the usage chunk is sent
    "user",              # end-user id for the provider's abuse tracking
    "cache",             # our own per-request cache control
    "metadata",          # OpenAI stored-completion tags
    "store",             # OpenAI stored-completion switch
    "service_tier",      # latency tier, same model
    "safety_identifier",
    "prompt_cache_key",  # hint for the provider's prefix cache
    "prompt_cache_retention",
    "timeout",
    "extra_headers",
})
"""Top-level request fields that never change the answer."""

KEY_VERSION = "2"
"""Bumped when the canonical form changes, so old entries are simply never found again."""


def _normalise(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _message(msg: Any) -> Any:
    if isinstance(msg, Mapping):
        return {str(k): _normalise(v) for k, v in msg.items() if v is not None}
    return _normalise(msg)


def canonical_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a request body that decides the answer, normalised (see the module docstring)."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in IGNORED_FIELDS or value is None:
            continue
        if name == "messages" and isinstance(value, list):
            out[name] = [_message(m) for m in value]
        elif name == "stop" and isinstance(value, str):
            out[name] = [value]
        else:
            out[name] = _normalise(value)
    return out


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of ``canonical_body(body)``: sorted keys, no insignificant whitespace."""
    return orjson.dumps(canonical_body(body), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def cache_scope(namespaces: Mapping[str, str], tenant: str) -> str:
    """The namespace a tenant's answers live in: ``ns:ALIAS`` for a tenant the policy maps to a shared
    alias, ``tenant:NAME`` otherwise. The two never meet, so no tenant name (``shared``, ``ns:shared``)
    can read or fill a shared alias's entries."""
    alias = namespaces.get(tenant)
    return f"ns:{alias}" if alias is not None else f"tenant:{tenant}"


def cache_key(prefix: str, namespace: str, kind: EndpointKind, body: Mapping[str, Any]) -> str:
    """Redis key ``{prefix}{namespace}:{kind}:{sha256}``.

    The namespace and kind are hashed too, so no choice of tenant name can make two scopes collide;
    they also stay readable in the key so an operator can ``SCAN`` or delete one tenant's entries.
    """
    h = hashlib.sha256()
    h.update(f"v{KEY_VERSION}\x00{namespace}\x00{kind}\x00".encode())
    h.update(canonical_json(body))
    return f"{prefix}{namespace}:{kind}:{h.hexdigest()}"


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """True for temperature 0 or a seed: the requests a cache may answer without changing behaviour.

    A missing temperature means the provider default (1.0), so it is not deterministic.
    """
    if body.get("seed") is not None:
        return True
    temp = body.get("temperature")
    return isinstance(temp, int | float) and not isinstance(temp, bool) and temp == 0
