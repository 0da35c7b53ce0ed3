"""Answer-level escalation: judge a non-streamed SLM answer by its own token logprobs.

For a domain with ``min_answer_confidence`` (or ``min_answer_margin``), the request to vLLM asks for
logprobs with the top two alternatives (``ask``); the answer's confidence is the mean token logprob and
the mean margin between the top two tokens (``measure``); below the domain's floor the answer is
discarded and the request escalates with ``low_answer_confidence sql=-1.90<-1.20``. What the client
receives is unchanged: logprobs it did not ask for are removed, and alternatives beyond the number it
asked for are trimmed (``restore``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import UpstreamError

if TYPE_CHECKING:
    from gateway.config import Policy

TOP = 2
"""Alternatives per token the gateway asks for (the margin needs two)."""


@dataclass(frozen=True, slots=True)
class Check:
    domain: str
    min_mean_logprob: float | None
    min_margin: float | None
    stream_tokens: int | None = None
    """Streams: tokens held back and judged (``serving.holdback``); None: streams are not judged."""


@dataclass(frozen=True, slots=True)
class Asked:
    """What the client itself asked for: ``logprobs`` on/off and how many alternatives (chat:
    ``top_logprobs``; completion: the ``logprobs`` integer)."""

    logprobs: bool
    top: int


@dataclass(frozen=True, slots=True)
class Confidence:
    mean_logprob: float
    mean_margin: float | None
    tokens: int


class LowConfidence(UpstreamError):
    """The SLM answered, but too unsure of itself: escalate, and keep what the answer cost."""

    def __init__(self, message: str, *, backend: str, reason: str, usage: Mapping[str, Any],
                 confidence: Confidence) -> None:
        super().__init__(message, backend=backend, reason=reason)
        self.usage = dict(usage)
        self.confidence = confidence


def checkable(kind: str, body: Mapping[str, Any]) -> bool:
    """Only chat and completion answers are judged; ``echo`` would mix prompt logprobs in."""
    return kind in ("chat", "completion") and not body.get("echo")


def ask(kind: str, payload: dict[str, Any]) -> Asked:
    """Edit ``payload`` (the SLM request) to ask for logprobs with ``TOP`` alternatives; return what the
    client had asked for itself."""
    if kind == "chat":
        asked = Asked(bool(payload.get("logprobs")), int(payload.get("top_logprobs") or 0))
        payload["logprobs"] = True
        payload["top_logprobs"] = max(asked.top, TOP)
        return asked
    value = payload.get("logprobs")
    asked = Asked(value is not None and value is not False, int(value or 0))
    payload["logprobs"] = max(asked.top, TOP)
    return asked


def _chat_tokens(choice: Mapping[str, Any]) -> list[tuple[float, list[float]]]:
    lp = choice.get("logprobs")
    items = lp.get("content") if isinstance(lp, Mapping) else None
    out = []
    for item in items or ():
        if isinstance(item, Mapping) and isinstance(item.get("logprob"), int | float):
            tops = [float(t["logprob"]) for t in item.get("top_logprobs") or ()
                    if isinstance(t, Mapping) and isinstance(t.get("logprob"), int | float)]
            out.append((float(item["logprob"]), tops))
    return out


def _completion_tokens(choice: Mapping[str, Any]) -> list[tuple[float, list[float]]]:
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return []
    values = lp.get("token_logprobs") or []
    tops = lp.get("top_logprobs") or []
    out = []
    for i, value in enumerate(values):
        if isinstance(value, int | float):
            alts = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
            out.append((float(value), [float(v) for v in alts.values() if isinstance(v, int | float)]))
    return out


def measure(kind: str, obj: Mapping[str, Any]) -> Confidence | None:
    """Confidence of the least confident choice; None when the answer carries no logprobs."""
    worst: Confidence | None = None
    for choice in obj.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        toks = _chat_tokens(choice) if kind == "chat" else _completion_tokens(choice)
        finite = [(lp, tops) for lp, tops in toks if math.isfinite(lp)]
        if not finite:
            continue
        mean = sum(lp for lp, _ in finite) / len(finite)
        margins = []
        for _, tops in finite:
            best = sorted((t for t in tops if math.isfinite(t)), reverse=True)
            if len(best) >= 2:
                margins.append(best[0] - best[1])
        conf = Confidence(mean, sum(margins) / len(margins) if margins else None, len(finite))
        if worst is None or conf.mean_logprob < worst.mean_logprob:
            worst = conf
    return worst


def verdict(check: Check, conf: Confidence | None) -> str | None:
    """The escalation reason, or None when the answer may be served (an answer without logprobs is
    served: the check cannot judge it)."""
    if conf is None:
        return None
    if check.min_mean_logprob is not None and conf.mean_logprob < check.min_mean_logprob:
        return f"low_answer_confidence {check.domain}={conf.mean_logprob:.2f}<{check.min_mean_logprob:.2f}"
    if check.min_margin is not None and conf.mean_margin is not None and conf.mean_margin < check.min_margin:
        return f"low_answer_margin {check.domain}={conf.mean_margin:.2f}<{check.min_margin:.2f}"
    return None


def restore(kind: str, obj: dict[str, Any], asked: Asked) -> None:
    """Make the answer what the client would have got without the gateway's logprob request."""
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict) or "logprobs" not in choice:
            continue
        if not asked.logprobs:
            choice["logprobs"] = None
            continue
        lp = choice["logprobs"]
        if not isinstance(lp, dict) or asked.top >= TOP:
            continue
        if kind == "chat":
            for item in lp.get("content") or ():
                if isinstance(item, dict) and isinstance(item.get("top_logprobs"), list):
                    item["top_logprobs"] = item["top_logprobs"][:asked.top]
        else:  # vLLM: the top `logprobs` alternatives, plus the sampled token when it is not among them
            tokens = lp.get("tokens") or []
            tops = lp.get("top_logprobs") or []
            for i, alts in enumerate(tops):
                if not isinstance(alts, dict):
                    continue
                best = sorted(alts, key=lambda t: alts[t], reverse=True)[:asked.top]
                if i < len(tokens) and tokens[i] in alts and tokens[i] not in best:
                    best.append(tokens[i])
                tops[i] = {t: alts[t] for t in alts if t in best}


def checks_from(policy: Policy) -> dict[str, Check]:
    """Domain -> its answer check, for domains that set a floor."""
    return {d.name: Check(d.name, d.min_answer_confidence, d.min_answer_margin, d.stream_holdback_tokens)
            for d in policy.domains
            if d.min_answer_confidence is not None or d.min_answer_margin is not None}


def judge(kind: str, obj: dict[str, Any], check: Check, asked: Asked, backend: str) -> dict[str, str]:
    """Raise ``LowConfidence`` for an answer below the floor; else restore the client's view of it and
    return what the ledger keeps (``answer_logprob``, ``answer_margin``)."""
    conf = measure(kind, obj)
    reason = verdict(check, conf)
    if reason is not None and conf is not None:  # verdict gives a reason only for a measured answer
        raise LowConfidence(f"SLM answer below the confidence floor ({reason})", backend=backend,
                            reason=reason, usage=obj.get("usage") or {}, confidence=conf)
    restore(kind, obj, asked)
    if conf is None:
        return {}
    return _confidence_extra(conf)


def _confidence_extra(conf: Confidence) -> dict[str, str]:
    out = {"answer_logprob": f"{conf.mean_logprob:.4f}"}
    if conf.mean_margin is not None:
        out["answer_margin"] = f"{conf.mean_margin:.4f}"
    return out


def discarded(exc: LowConfidence) -> dict[str, str]:
    """Ledger extras for a discarded SLM answer (``gateway.costs`` adds its cost to the request's)."""
    tokens = int(exc.usage.get("prompt_tokens") or 0) + int(exc.usage.get("completion_tokens") or 0)
    return {"slm_discarded_backend": exc.backend or "", "slm_discarded_tokens": str(tokens),
            "slm_discarded_reason": exc.reason, **_confidence_extra(exc.confidence)}
