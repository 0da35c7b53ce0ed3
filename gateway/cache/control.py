"""Per-request cache control: the ``cache`` body field and the ``Cache-Control`` request header.

``no-cache`` means "do not answer me from the cache" (the fresh answer may still be stored);
``no-store`` means "do not keep this answer"; ``ttl`` (seconds) overrides the domain's TTL for the
answer stored. The body field wins over nothing: both sources are merged, any ``no-*`` from either
applies. Malformed values are ignored rather than refused: cache control is advice, and the cache
never turns a request into a client error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_cache: bool = False
    """Skip the lookup."""
    no_store: bool = False
    """Do not store the answer."""
    ttl_s: int | None = None
    """TTL requested for the stored answer; capped by the configured maximum."""


def _flag(field: Mapping[str, Any], name: str) -> bool:
    value = field.get(name, field.get(name.replace("-", "_")))
    return value is True


def _ttl(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 1 else None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value or ""


def parse_control(field: Any, headers: Mapping[str, str] | None = None) -> CacheControl:
    """Merge the body's ``cache`` field (any JSON value) with the request headers.

    ``headers`` is any mapping; starlette's ``Headers`` is case-insensitive, a plain dict is tried
    as ``cache-control`` and ``Cache-Control``.
    """
    no_cache = no_store = False
    ttl: int | None = None
    if isinstance(field, Mapping):
        no_cache = _flag(field, "no-cache")
        no_store = _flag(field, "no-store")
        ttl = _ttl(field.get("ttl"))
    if headers:
        directives = {d.strip().split("=", 1)[0].lower()
                      for d in _header(headers, "cache-control").split(",")}
        no_cache = no_cache or "no-cache" in directives
        no_store = no_store or "no-store" in directives
    return CacheControl(no_cache=no_cache, no_store=no_store, ttl_s=ttl)


def without_cache_field(body: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """A copy of ``body`` without the ``cache`` field (which must never reach an upstream), and the field."""
    out = dict(body)
    return out, out.pop("cache", None)
