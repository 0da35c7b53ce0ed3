"""Cost model: every figure is hand-computed from the price table in ledger_helpers.PRICES.

big   = gpt-4o:      $2.50 / 1M in, $10.00 / 1M out           (baseline by default: first fallback)
small = gpt-4o-mini: $0.10 / 1M in (policy override), $0.60 / 1M out (map)
sql-slm:  $0.20 / 1M tokens
code-slm: $1.80 / GPU-hour at 500 tokens/s -> $1.80 / 1.8M tokens = $1.00 / 1M tokens
A request of 1000 prompt + 500 completion tokens therefore costs:
  big 0.0025 + 0.005 = 0.0075; small 0.0001 + 0.0003 = 0.0004; sql 0.0003; code 0.0015.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import PolicyError, SlmCost
from gateway.costs import CostConfigError, CostModel, Price, load_model_cost_map, lookup_price, slm_cost

try:
    from tests.gateway.ledger_helpers import PRICES, policy, rec
except ImportError:  # tests/gateway is not a package: pytest puts this directory on sys.path
    from ledger_helpers import PRICES, policy, rec  # type: ignore[no-redef]


@pytest.fixture
def model() -> CostModel:
    return CostModel.from_policy(policy(), PRICES)


def test_prices_resolved_from_map_and_overrides(model: CostModel) -> None:
    assert model.llm_prices["big"] == Price(2.5e-06, 1e-05)
    assert model.llm_prices["small"] == Price(pytest.approx(1e-07), 6e-07)  # type: ignore[arg-type]
    assert model.baseline_model == "openai/gpt-4o"
    assert model.baseline == Price(2.5e-06, 1e-05)


@pytest.mark.parametrize(("kw", "cost", "baseline"), [
    ({"route": "slm", "backend": "sql-slm"}, 0.0003, 0.0075),
    ({"route": "slm", "backend": "code-slm", "domain": "code"}, 0.0015, 0.0075),
    ({"route": "llm", "backend": "big", "model": "openai/gpt-4o"}, 0.0075, 0.0075),
    ({"route": "llm", "backend": "small", "model": "openai/gpt-4o-mini"}, 0.0004, 0.0075),
    ({"route": "llm", "backend": "big", "escalation": "slm_error:connect"}, 0.0075, 0.0075),
    ({"route": "cache", "backend": None, "cache": "hit"}, 0.0, 0.0075),
    # Failed requests claim no savings; embeddings have no chat baseline.
    ({"route": "none", "backend": None, "status": 502, "prompt_tokens": 0, "completion_tokens": 0}, 0.0, 0.0),
    ({"route": "llm", "backend": "big", "status": 500}, 0.0075, 0.0075),
    ({"route": "llm", "backend": "small", "endpoint": "embedding", "completion_tokens": 0}, 0.0001, 0.0001),
])
def test_hand_computed_costs(model: CostModel, kw: dict[str, object], cost: float, baseline: float) -> None:
    c = model.price(rec(**kw))
    assert c.cost_usd == pytest.approx(cost, rel=1e-12)
    assert c.baseline_cost_usd == pytest.approx(baseline, rel=1e-12)
    assert c.savings_usd == pytest.approx(baseline - cost, rel=1e-12, abs=1e-15)
    assert c.shadow_cost_usd is None


def test_shadow_cost_is_what_the_router_would_have_used(model: CostModel) -> None:
    # Shadow mode: the request went to the LLM; the router would have sent it to the sql SLM.
    c = model.price(rec(route="llm", backend="big", would_route="slm", domain="sql"))
    assert (c.cost_usd, c.shadow_cost_usd) == (pytest.approx(0.0075), pytest.approx(0.0003))
    c = model.price(rec(route="llm", backend="big", would_route="slm", domain="code"))
    assert c.shadow_cost_usd == pytest.approx(0.0015)
    c = model.price(rec(route="llm", backend="big", would_route="llm", domain=None))
    assert c.shadow_cost_usd == pytest.approx(0.0075)


def test_explicit_baseline_and_its_override() -> None:
    m = CostModel.from_policy(policy({"costs": {"baseline_llm": "openai/gpt-4o-mini"}}), PRICES)
    # 1000 * 0.15e-6 + 500 * 0.6e-6 (the map's price; the backend override is the backend's, not the baseline's)
    assert m.price(rec()).baseline_cost_usd == pytest.approx(0.00045)
    m = CostModel.from_policy(policy({"costs": {"baseline_llm": "acme/in-house", "baseline_input_usd_per_1m": 1.0,
                                                "baseline_output_usd_per_1m": 2.0}}), PRICES)
    assert m.price(rec()).baseline_cost_usd == pytest.approx(0.002)


def test_unknown_baseline_fails_clearly_at_start() -> None:
    with pytest.raises(CostConfigError, match=r"costs\.baseline_llm.*'acme/in-house'.*baseline_input_usd_per_1m"):
        CostModel.from_policy(policy({"costs": {"baseline_llm": "acme/in-house"}}), PRICES)
    # One side overridden is not enough when the map does not know the model.
    with pytest.raises(CostConfigError):
        CostModel.from_policy(policy({"costs": {"baseline_llm": "acme/in-house",
                                                "baseline_input_usd_per_1m": 1.0}}), PRICES)


def test_unpriced_llm_backend() -> None:
    extra = {"llm_backends": {"big": {"model": "openai/gpt-4o"}, "small": {"model": "local/mystery"}}}
    with pytest.raises(CostConfigError, match=r"llm_backends\.small.*'local/mystery'"):
        CostModel.from_policy(policy(extra), PRICES)
    m = CostModel.from_policy(policy({**extra, "costs": {"require_prices": False}}), PRICES)
    assert m.price(rec(route="llm", backend="small")).cost_usd == 0.0
    # The default baseline is the first fallback: unpriced there is always an error.
    extra2 = {"llm_backends": {"big": {"model": "local/mystery"}, "small": {"model": "openai/gpt-4o-mini"}},
              "costs": {"require_prices": False}}
    with pytest.raises(CostConfigError, match="baseline"):
        CostModel.from_policy(policy(extra2), PRICES)


def test_slm_cost_policy_validation() -> None:
    both = {"slm_backends": {"sql-slm": {"base_url": "http://x/v1", "model": "sql",
                                         "cost": {"usd_per_1m_tokens": 1, "gpu_hour_usd": 2, "tokens_per_second": 3}}}}
    with pytest.raises(PolicyError, match="either usd_per_1m_tokens"):
        policy(both)
    half = {"slm_backends": {"sql-slm": {"base_url": "http://x/v1", "model": "sql", "cost": {"gpu_hour_usd": 2}}}}
    with pytest.raises(PolicyError, match="needs tokens_per_second"):
        policy(half)


@given(tokens=st.integers(0, 10_000_000), gpu=st.floats(0, 100), tps=st.floats(0.1, 1e5))
def test_gpu_hour_formula(tokens: int, gpu: float, tps: float) -> None:
    cost = slm_cost(SlmCost(gpu_hour_usd=gpu, tokens_per_second=tps), tokens)
    assert cost == pytest.approx(tokens / (tps * 3600) * gpu)


def test_bundled_litellm_map_is_read_locally() -> None:
    cmap = load_model_cost_map()
    assert len(cmap) > 1000
    price = lookup_price("openai/gpt-4o-mini", cmap)
    assert price is not None and price.input_per_token > 0 and price.output_per_token > price.input_per_token
    assert lookup_price("acme/not-a-model", cmap) is None
    # The default policy prices from the bundled map without error.
    m = CostModel.from_policy(policy())
    assert m.baseline == lookup_price("gpt-4o", cmap)


def test_price_never_raises(model: CostModel) -> None:
    bad = rec()
    bad.prompt_tokens = "many"  # type: ignore[assignment]
    assert model.price(bad).cost_usd == 0.0
