"""What the pipeline knows about one finished request, handed to the ledger and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Route = Literal["slm", "llm", "cache", "none"]


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    ts: float
    """Unix time the request arrived."""
    tenant: str
    endpoint: Literal["chat", "completion", "embedding"]
    requested_model: str
    stream: bool = False
    route: Route = "none"
    """Where the answer came from; "none" when no backend answered (an error)."""
    domain: str | None = None
    model: str | None = None
    """Model that answered: the SLM's served name or the litellm model string."""
    backend: str | None = None
    """Policy name of the backend that answered (slm_backends / llm_backends key)."""
    reason: str = ""
    """The routing decision's reason, e.g. "low_confidence sql=0.41<0.70"."""
    confidence: float | None = None
    escalation: str | None = None
    """Why an SLM-bound request ended on the LLM (e.g. "slm_error:connect"), else None."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    """Time to first token, streams only."""
    status: int = 200
    error_code: str | None = None
    cache: Literal["hit", "miss", "bypass"] = "bypass"
    would_route: str | None = None
    """Shadow mode: the route the router would have taken."""
    policy_version: str | None = None
    """Version of the policy that routed the request (``gateway.policy_version``)."""
    key_id: str | None = None
    """Public id of the caller's key (per-key budgets are summed by it)."""
    prompt_text: str | None = None
    """Only when the policy opts in to storing prompts."""
    extra: dict[str, str] = field(default_factory=dict)


def escalation_kind(escalation: str) -> str:
    """An escalation without its measurements, for reports and metrics: ``context_length:100+20>4096`` ->
    ``context_length``, ``low_answer_confidence sql=-1.90<-1.20`` -> ``low_answer_confidence``, while
    ``slm_error:timeout`` or ``unsupported:tools`` stay. Several reasons (``a,b``) keep their order."""
    kinds = []
    for part in escalation.split(","):
        head = part.strip().split(" ", 1)[0]
        name, sep, rest = head.partition(":")
        kinds.append(name if sep and any(ch.isdigit() for ch in rest) else head)
    return ",".join(k for k in kinds if k)[:128] or "unknown"
