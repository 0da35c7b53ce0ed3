"""What a request cost, what the baseline LLM would have cost, and so what the gateway saved.

Prices come from litellm's bundled cost map (read locally, never fetched), overridable per backend in
the policy. Formulas and caveats: docs/costs.md. Everything here is plain arithmetic on a finished
``RequestRecord``: cheap enough to run on the response path (for the ``x-slmgw-cost-usd`` header).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import Policy, SlmCost
    from gateway.records import RequestRecord

log = logging.getLogger(__name__)

_PER_1M = 1_000_000.0


class CostConfigError(ValueError):
    """The policy's prices cannot be resolved (an unknown model without an override)."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token for prompt (input) and completion (output) tokens."""

    input_per_token: float
    output_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


@dataclass(frozen=True, slots=True)
class Cost:
    """The three figures the ledger stores for one request (USD)."""

    cost_usd: float
    """What the request actually cost on the route it took."""
    baseline_cost_usd: float
    """What the baseline LLM would have cost for the same prompt tokens and actual completion tokens."""
    shadow_cost_usd: float | None = None
    """Shadow mode only: what the route the router would have taken would have cost."""

    @property
    def savings_usd(self) -> float:
        return self.baseline_cost_usd - self.cost_usd


def load_model_cost_map() -> Mapping[str, Mapping[str, Any]]:
    """litellm's model cost map, without a network fetch.

    If litellm is already imported (serving uses it) its live ``model_cost`` is used, so prices
    registered at run time count; otherwise the JSON file bundled with litellm is read directly, which
    avoids litellm's multi-second import in the CLI.
    """
    mod = sys.modules.get("litellm")
    if mod is not None and isinstance(getattr(mod, "model_cost", None), dict):
        return mod.model_cost  # type: ignore[no-any-return]
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    for root in spec.submodule_search_locations:
        path = Path(root) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            return {k: v for k, v in data.items() if isinstance(v, dict)}
    return {}


def lookup_price(model: str, cost_map: Mapping[str, Mapping[str, Any]]) -> Price | None:
    """Price of a litellm model string, trying it as given and without its provider prefix
    (``openai/gpt-4o-mini`` is listed as ``gpt-4o-mini``)."""
    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        info = cost_map.get(name)
        if not info:
            continue
        inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(inp, int | float) and isinstance(out, int | float):
            return Price(float(inp), float(out))
    return None


def _override(input_1m: float | None, output_1m: float | None, found: Price | None) -> Price | None:
    """Per-1M overrides win; an override of one side keeps the map's price for the other."""
    if input_1m is None and output_1m is None:
        return found
    if found is None and (input_1m is None or output_1m is None):
        return None
    inp = input_1m / _PER_1M if input_1m is not None else found.input_per_token  # type: ignore[union-attr]
    out = output_1m / _PER_1M if output_1m is not None else found.output_per_token  # type: ignore[union-attr]
    return Price(inp, out)


def slm_cost(cost: SlmCost | None, tokens: int) -> float:
    """Cost of ``tokens`` (prompt + completion) on an SLM; 0 when the policy gives no cost."""
    if cost is None or tokens <= 0:
        return 0.0
    if cost.usd_per_1m_tokens is not None:
        return tokens / _PER_1M * cost.usd_per_1m_tokens
    if cost.gpu_hour_usd is not None and cost.tokens_per_second:
        return tokens / (cost.tokens_per_second * 3600.0) * cost.gpu_hour_usd
    return 0.0


class CostModel:
    """Prices every finished request. Build once at start-up with ``from_policy`` (which fails clearly
    on an unpriced baseline), then call ``price(record)`` per request."""

    def __init__(self, *, llm_prices: Mapping[str, Price], slm_costs: Mapping[str, SlmCost | None],
                 domain_backends: Mapping[str, str], baseline_model: str, baseline: Price) -> None:
        self.llm_prices = dict(llm_prices)
        """Price per LLM backend name."""
        self.slm_costs = dict(slm_costs)
        """Cost settings per SLM backend name."""
        self.domain_backends = dict(domain_backends)
        """SLM backend serving each domain (to price the shadow route)."""
        self.baseline_model = baseline_model
        self.baseline = baseline

    @classmethod
    def from_policy(cls, policy: Policy,
                    cost_map: Mapping[str, Mapping[str, Any]] | None = None) -> CostModel:
        cmap = load_model_cost_map() if cost_map is None else cost_map
        strict = policy.costs.require_prices
        llm_prices: dict[str, Price] = {}
        for name, backend in policy.llm_backends.items():
            price = _override(backend.input_usd_per_1m, backend.output_usd_per_1m,
                              lookup_price(backend.model, cmap))
            if price is None:
                msg = (f"llm_backends.{name}: no price for model {backend.model!r} in litellm's cost map; "
                       "set input_usd_per_1m and output_usd_per_1m")
                if strict:
                    raise CostConfigError(msg + " (or costs.require_prices: false)")
                log.warning("%s; its cost is recorded as 0", msg)
                price = Price(0.0, 0.0)
            llm_prices[name] = price

        costs = policy.costs
        if costs.baseline_llm is None:
            first = policy.fallback.llm[0]
            baseline_model = policy.llm_backends[first].model
            found: Price | None = llm_prices[first]
            if not strict and found == Price(0.0, 0.0):
                found = None
        else:
            baseline_model = costs.baseline_llm
            found = lookup_price(baseline_model, cmap)
            if found is None:  # a backend with the same model may carry an override
                found = next((llm_prices[n] for n, b in policy.llm_backends.items()
                              if b.model == baseline_model), None)
        baseline = _override(costs.baseline_input_usd_per_1m, costs.baseline_output_usd_per_1m, found)
        if baseline is None:
            raise CostConfigError(
                f"costs.baseline_llm: no price for baseline model {baseline_model!r} in litellm's cost "
                "map; set costs.baseline_input_usd_per_1m and costs.baseline_output_usd_per_1m")
        return cls(llm_prices=llm_prices,
                   slm_costs={n: b.cost for n, b in policy.slm_backends.items()},
                   domain_backends={d.name: d.backend for d in policy.domains},
                   baseline_model=baseline_model, baseline=baseline)

    def route_cost(self, route: str, backend: str | None, model: str | None,
                   prompt_tokens: int, completion_tokens: int) -> float:
        if route == "cache":
            return 0.0
        if route == "slm" and backend is not None:
            return slm_cost(self.slm_costs.get(backend), prompt_tokens + completion_tokens)
        if backend is not None and backend in self.llm_prices:
            return self.llm_prices[backend].cost(prompt_tokens, completion_tokens)
        if route == "llm" and model is not None:  # a backend the policy no longer names
            return self.baseline.cost(prompt_tokens, completion_tokens) if model == self.baseline_model \
                else 0.0
        return 0.0

    def price(self, rec: RequestRecord) -> Cost:
        """Cost, baseline cost and (shadow mode) would-be cost of one finished request. Never raises."""
        try:
            return self._price(rec)
        except Exception:  # pricing must never break a request or lose its ledger row
            log.exception("pricing request %s failed", rec.request_id)
            return Cost(0.0, 0.0)

    def _price(self, rec: RequestRecord) -> Cost:
        pt, ct = max(rec.prompt_tokens, 0), max(rec.completion_tokens, 0)
        cost = self.route_cost(rec.route, rec.backend, rec.model, pt, ct)
        spent = rec.extra.get("slm_discarded_backend")
        if spent:  # an SLM answer discarded for low confidence (serving.confidence) was paid for too
            cost += slm_cost(self.slm_costs.get(spent), int(rec.extra.get("slm_discarded_tokens") or 0))
        if rec.status >= 400 or rec.endpoint == "embedding":
            # A failed request saved nothing; an embedding has no chat-model baseline.
            baseline = cost
        else:
            # Same prompt tokens, actual completion tokens (an estimate: the baseline LLM would have
            # tokenised and answered differently). A cache hit costs 0 and so saves all of this.
            baseline = self.baseline.cost(pt, ct)
        shadow: float | None = None
        if rec.would_route is not None:
            if rec.would_route == "slm" and rec.domain in self.domain_backends:
                shadow = slm_cost(self.slm_costs.get(self.domain_backends[rec.domain]), pt + ct)
            elif rec.would_route == "cache":
                shadow = 0.0
            else:
                shadow = cost
        return Cost(cost, baseline, shadow)
