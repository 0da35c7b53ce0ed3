"""Hosted LLMs through litellm.

litellm is imported on first use (it takes seconds to import), with ``LITELLM_LOCAL_MODEL_COST_MAP``
set so it never fetches its price map from the internet. Provider errors are mapped onto the gateway's
error tree: the provider refusing the *request* (400, 404, 413, 422) is the client's error and is passed
on; everything else (auth of the gateway's own key, 429, 5xx, timeouts, connection) is an
``UpstreamError`` so the next backend in the fallback chain can try.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import LlmBackend
from gateway.errors import UpstreamClientError, UpstreamError, UpstreamTimeout
from serving.params import FieldRules, Kind, for_llm


def import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def _call_args(backend: LlmBackend, kind: Kind, body: dict[str, Any], rules: FieldRules) -> dict[str, Any]:
    """litellm's keyword arguments: the endpoint's OpenAI parameters from the client (``serving.params``),
    everything else only from the policy. Other fields the policy lets through travel in ``extra_body``
    (the provider's JSON body), where litellm does not read them as settings."""
    args, extra = for_llm(kind, body, rules)
    if extra:
        args["extra_body"] = extra
    args["model"] = backend.model
    args["timeout"] = backend.timeout_s
    args["num_retries"] = backend.max_retries
    if backend.api_base:
        args["api_base"] = backend.api_base
    if backend.api_key:
        args["api_key"] = backend.api_key
    return args


_KEYISH = re.compile(r"\b(sk|pk|key|token)[-_][A-Za-z0-9_\-]{8,}", re.IGNORECASE)


def scrub(text: str, key: str | None = None) -> str:
    """Remove the backend's key and anything shaped like an API key from a message that may be logged
    or returned to a client."""
    if key:
        text = text.replace(key, "***")
    return _KEYISH.sub("***", text)


def _map_error(name: str, exc: Exception, key: str | None = None) -> Exception:
    status = getattr(exc, "status_code", None)
    kind = type(exc).__name__
    # litellm puts the provider's message after its own prefixes; keep it short and key-free.
    message = scrub(str(getattr(exc, "message", exc)).replace("litellm.", ""), key)[:500]
    if kind in ("Timeout",) or "Timeout" in kind:
        return UpstreamTimeout(f"LLM backend {name!r} timed out", backend=name, reason="llm_timeout")
    if isinstance(status, int) and status in (400, 404, 413, 422) and kind not in (
            "NotFoundError",):
        return UpstreamClientError(f"LLM backend {name!r} rejected the request: {message}",
                                   status=400 if status == 422 else status)
    if kind == "AuthenticationError" or status in (401, 403):
        return UpstreamError(f"LLM backend {name!r} refused the gateway's credentials", backend=name,
                             reason="llm_auth")
    if status == 429:
        return UpstreamError(f"LLM backend {name!r} is rate limited", backend=name, reason="llm_rate_limited")
    return UpstreamError(f"LLM backend {name!r} failed: {message}", backend=name,
                         reason=f"llm_{'http_' + str(status) if status else 'error'}")


class LlmClient:
    def __init__(self, rules: FieldRules | None = None) -> None:
        self._litellm: Any = None
        self.rules = rules or FieldRules()

    @property
    def litellm(self) -> Any:
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    async def _call(self, fn: str, name: str, backend: LlmBackend, args: dict[str, Any]) -> Any:
        """``litellm.<fn>(**args)`` with provider errors mapped onto the gateway's error tree."""
        try:
            return await getattr(self.litellm, fn)(**args)
        except Exception as exc:  # litellm raises many types; all are mapped
            raise _map_error(name, exc, backend.api_key) from None

    async def chat(self, name: str, backend: LlmBackend, body: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self._call("acompletion", name, backend, _call_args(backend, "chat", body, self.rules)))

    async def completion(self, name: str, backend: LlmBackend, body: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self._call("atext_completion", name, backend,
                                      _call_args(backend, "completion", body, self.rules)))

    async def embedding(self, name: str, backend: LlmBackend, body: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self._call("aembedding", name, backend,
                                      _call_args(backend, "embedding", body, self.rules)))

    async def stream(self, name: str, backend: LlmBackend, body: dict[str, Any],
                     chat: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Open a stream; the call itself raises mapped errors before any chunk is yielded."""
        args = {**_call_args(backend, "chat" if chat else "completion", body, self.rules), "stream": True}
        resp = await self._call("acompletion" if chat else "atext_completion", name, backend, args)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                async for chunk in resp:
                    yield _dump(chunk)
            except Exception as exc:
                raise _map_error(name, exc, backend.api_key) from None

        return chunks()


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    data: dict[str, Any] = obj.model_dump(exclude_none=True)
    data.pop("provider_specific_fields", None)
    text_completion = data.get("object") == "text_completion"
    for choice in data.get("choices") or []:
        if isinstance(choice, dict):
            choice.pop("provider_specific_fields", None)
            if text_completion:
                choice.setdefault("text", "")
            for key in ("message", "delta"):
                if isinstance(choice.get(key), dict):
                    choice[key].pop("provider_specific_fields", None)
    return data
