"""Keyword router: a domain wins when its keywords appear in the request; no training needed.

Confidence is the winning domain's share of all keyword hits, so a request that mentions two domains'
words equally scores 0.5 and escalates under the default threshold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.config import Policy
from router.base import Decision, register
from router.text import routing_text


class KeywordRouter:
    def __init__(self, policy: Policy) -> None:
        self._max_chars = policy.router.max_chars
        self._default_threshold = policy.router.threshold
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._thresholds: dict[str, float] = {}
        for dom in policy.domains:
            if dom.keywords:
                words = sorted((re.escape(k.lower()) for k in dom.keywords), key=len, reverse=True)
                self._patterns[dom.name] = re.compile(r"\b(?:" + "|".join(words) + r")\b")
            self._thresholds[dom.name] = dom.threshold if dom.threshold is not None else policy.router.threshold

    def decide(self, request: Mapping[str, Any]) -> Decision:
        try:
            text = routing_text(request, self._max_chars).lower()
        except Exception as exc:
            return Decision("llm", None, 0.0, f"unreadable_request {type(exc).__name__}")
        if not text.strip():
            return Decision("llm", None, 0.0, "no_text")
        hits = {name: len(p.findall(text)) for name, p in self._patterns.items()}
        total = sum(hits.values())
        if total == 0:
            return Decision("llm", None, 1.0, "general no domain keywords")
        scores = {name: n / total for name, n in hits.items()}
        domain = max(scores, key=lambda d: scores[d])
        conf = scores[domain]
        threshold = self._thresholds[domain]
        if conf >= threshold:
            return Decision("slm", domain, conf, f"keywords {domain}={conf:.2f}>={threshold:.2f}", scores)
        return Decision("llm", domain, conf, f"low_confidence {domain}={conf:.2f}<{threshold:.2f}", scores)


@register("keyword")
def _factory(policy: Policy) -> KeywordRouter:
    return KeywordRouter(policy)
