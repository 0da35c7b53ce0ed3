"""The routing interface: ``Router.decide(request) -> Decision``.

The router sees only the request body (a plain dict in OpenAI's shape); it knows nothing of HTTP or
backends. A new kind of router is one class registered with ``register``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from gateway.config import Policy

Target = Literal["slm", "llm"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request should go and why.

    ``domain`` is the predicted domain (``None`` for general); ``target`` is ``"slm"`` only when the
    router is confident enough to send it to that domain's SLM. ``reason`` is short and readable,
    e.g. ``"classified sql=0.93>=0.70"`` or ``"low_confidence sql=0.41<0.70"``. ``scores`` holds every
    label's probability; ``features`` the few words or character n-grams (``*gram*``) that pushed the
    request towards its top label most, with how much each added to that label's log-odds.
    """

    target: Target
    domain: str | None
    confidence: float
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    features: tuple[tuple[str, float], ...] = ()


class Router(Protocol):
    def decide(self, request: Mapping[str, Any]) -> Decision:
        """Decide for one request body (chat or completion). Must never raise: bad input goes to the
        LLM with a reason."""
        ...


RouterFactory = Callable[["Policy"], Router]
_REGISTRY: dict[str, RouterFactory] = {}


def register(kind: str) -> Callable[[RouterFactory], RouterFactory]:
    def deco(factory: RouterFactory) -> RouterFactory:
        _REGISTRY[kind] = factory
        return factory

    return deco


def build_router(policy: Policy) -> Router:
    """Build the router the policy names (``router.kind``)."""
    import router.keyword

    if policy.router.kind == "classifier":
        import router.classifier  # noqa: F401  (registers "classifier")
    try:
        factory = _REGISTRY[policy.router.kind]
    except KeyError:
        raise ValueError(f"unknown router kind {policy.router.kind!r}") from None
    return factory(policy)
