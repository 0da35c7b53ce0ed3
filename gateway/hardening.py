"""Defences of the HTTP surface and the start-up of the request guards (keys, limits, privacy).

Hostile JSON is refused with 400 before any code walks it: orjson already rejects invalid UTF-8, lone
surrogates and nesting over 1024 levels, but the rest of the gateway (serialisation for the upstream,
the cache key, the router's text extraction) must never meet a structure deeper than ``MAX_DEPTH``
or with more than ``MAX_NODES`` values, so that a request cannot turn into a RecursionError (500) or
a CPU sink.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)

MAX_DEPTH = 64
"""Deepest nesting of arrays/objects accepted in a request body (OpenAI's own requests need < 10)."""
MAX_NODES = 1_000_000
"""Most JSON values (strings, numbers, containers) in one body."""


def check_json_shape(body: Any, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Raise InvalidRequest (400) for a body nested deeper than ``max_depth`` or with too many values."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise InvalidRequest(f"Request body has more than {max_nodes} JSON values.")
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= max_depth and children:
            raise InvalidRequest(f"Request body is nested deeper than {max_depth} levels.")
        stack.extend((child, depth + 1) for child in children)


async def start_guards(services: Services) -> None:
    """Build and start the key-store refresher, limits and privacy rule into ``services.extras``."""
    from gateway.limits import Limits
    from gateway.privacy import Privacy

    policy = services.policy
    if policy.auth.key_store.enabled:
        from gateway.keys.refresh import KeyStoreRefresher

        refresher = KeyStoreRefresher(policy, services.keys)
        await refresher.start()
        services.extras["keystore"] = refresher
    limits = Limits.from_policy(policy)
    if limits.limiter is not None or limits.budgets is not None or policy.limits.tenants \
            or policy.limits.default.max_tokens is not None:
        services.extras["limits"] = limits
        await limits.start()
        metrics = services.extras.get("metrics")
        if limits.limiter is not None and metrics is not None and hasattr(metrics, "registry"):
            counter = getattr(metrics, "limits_fail_open", None)
            if counter is None:  # once per registry: a policy reload builds the limits again
                from prometheus_client import Counter

                counter = Counter("slmgw_limits_fail_open", "Requests let through unlimited because the rate "
                                  "limiter's Redis was unreachable.", registry=metrics.registry)
                metrics.limits_fail_open = counter
            limits.limiter.on_fail_open = counter.inc
    else:
        await limits.close()
    if policy.privacy.action != "off":
        services.extras["privacy"] = Privacy(policy)


async def stop_guards(services: Services) -> None:
    for name in ("limits", "keystore"):
        component = services.extras.pop(name, None)
        if component is not None:
            try:
                await component.close()
            except Exception:
                log.exception("closing %s failed", name)


_PART_FIELDS = {"text": "text", "image_url": "image_url", "input_audio": "input_audio", "file": "file",
                "refusal": "refusal"}
"""Content part types of OpenAI's chat API and the field each one must carry."""


def check_content_parts(messages: list[Any]) -> None:
    """400 for a content part OpenAI would refuse (upstreams answer such parts with errors that look like
    their own failures, which would turn a bad request into an escalation or a 503)."""
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            field = _PART_FIELDS.get(kind) if isinstance(kind, str) else None
            if field is None or field not in part:
                raise InvalidRequest(f"messages[{i}].content[{j}]: a content part needs a known 'type' (text, "
                                     "image_url, input_audio, file) and its matching field.",
                                     param=f"messages[{i}].content[{j}]")
            if field == "text" and not isinstance(part["text"], str):
                raise InvalidRequest(f"messages[{i}].content[{j}].text must be a string.",
                                     param=f"messages[{i}].content[{j}].text")
