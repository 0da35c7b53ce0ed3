"""ClassifierRouter: thresholds, reasons, the conversation rule, and bad input (never raises)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.base import build_router
from router.classifier import ClassifierRouter
from router.model import RouterModel
from tests.router.conftest import make_policy


def chat(*turns: str | dict[str, Any], **extra: Any) -> dict[str, Any]:
    msgs = [t if isinstance(t, dict) else {"role": "user", "content": t} for t in turns]
    return {"model": "auto", "messages": msgs, **extra}


SQL = "Write a SQL query that returns the total revenue per region last month."


@pytest.fixture
def router(model_path: Path) -> ClassifierRouter:
    r = build_router(make_policy(model_path))
    assert isinstance(r, ClassifierRouter)
    return r


def test_confident_domain_goes_to_its_slm(router: ClassifierRouter) -> None:
    d = router.decide(chat(SQL))
    assert (d.target, d.domain) == ("slm", "sql")
    assert d.reason == f"classified sql={d.confidence:.2f}>=0.50"
    assert set(d.scores) == {"code", "general", "math", "sql", "support"}
    assert d.scores["sql"] == pytest.approx(d.confidence, abs=1e-3)


def test_general_goes_to_llm(router: ClassifierRouter) -> None:
    d = router.decide(chat("Give me a recipe for banana bread."))
    assert d.target == "llm" and d.domain is None
    assert d.reason.startswith("general general=")


def test_below_threshold_escalates_with_reason(model_path: Path) -> None:
    r = build_router(make_policy(model_path, {"sql": 1.0, "code": None, "support": None, "math": None}))
    d = r.decide(chat(SQL))
    assert d.target == "llm" and d.domain == "sql"
    assert d.reason == f"low_confidence sql={d.confidence:.2f}<1.00"


def test_threshold_precedence_policy_over_model_over_default(trained: tuple[RouterModel, Path],
                                                             tmp_path: Path) -> None:
    model, _ = trained
    model.update_thresholds({"sql": 0.8, "code": 0.75})
    path = model.save(tmp_path / "m.npz")
    r = build_router(make_policy(path, {"sql": 0.6, "code": None, "support": None, "math": None}, threshold=0.55))
    assert isinstance(r, ClassifierRouter)
    assert r.thresholds == {"sql": 0.6, "code": 0.75, "support": 0.55, "math": 0.55}


def test_label_without_policy_domain_is_unserved(model_path: Path) -> None:
    r = build_router(make_policy(model_path, {"sql": None}))
    d = r.decide(chat("My card was declined at the supermarket. Why?"))
    assert d.target == "llm" and d.domain == "support" and d.reason.startswith("unserved support=")


def test_follow_up_keeps_the_domain_of_the_conversation(router: ClassifierRouter) -> None:
    follow_up = router.decide(chat(SQL, {"role": "assistant", "content": "SELECT region, sum(amount) ..."},
                                   "now group it by month"))
    alone = router.decide(chat("now group it by month"))
    assert follow_up.domain == "sql" and follow_up.target == "slm"
    assert follow_up.confidence > alone.scores.get("sql", 0.0)


def test_change_of_subject_follows_the_latest_turn(router: ClassifierRouter) -> None:
    d = router.decide(chat(SQL, "thanks! unrelated: give me a recipe for lasagna and tips for a dinner party"))
    assert d.target == "llm" and d.reason.startswith("general")


def test_completion_prompt_is_classified(router: ClassifierRouter) -> None:
    assert router.decide({"model": "auto", "prompt": SQL}).domain == "sql"


# -- bad input: each routes to the LLM with a reason, never raises --------------------------------------
@pytest.mark.parametrize(("request_body", "reason"), [
    (chat(), "no_text"),
    ({"model": "auto", "messages": "not a list"}, "no_text"),
    ({"model": "auto", "prompt": [1, 2, 3]}, "no_text"),
    (chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                                       {"type": "text", "text": SQL}]}), "non_text_content image_url"),
    (chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}),
     "non_text_content input_audio"),
    (chat(SQL, {"role": "assistant", "content": None,
                "tool_calls": [{"id": "1", "type": "function", "function": {"name": "run", "arguments": "{}"}}]}),
     "tool_turn"),
    (chat({"role": "assistant", "content": None,
           "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "tool", "tool_call_id": "1", "content": "42"}), "tool_turn"),
    (chat(SQL, tools=[{"type": "function", "function": {"name": "run_sql"}}]), "tools_requested"),
    (chat("🙂🙂🙂 👍"), "no_text no letters or digits"),
])
def test_bad_input_escalates(router: ClassifierRouter, request_body: dict[str, Any], reason: str) -> None:
    d = router.decide(request_body)
    assert (d.target, d.reason) == ("llm", reason)


def test_non_mapping_request_does_not_raise(router: ClassifierRouter) -> None:
    assert router.decide(None).target == "llm"  # type: ignore[arg-type]
    assert router.decide({"messages": [None, 3, {"role": "user", "content": 5}]}).reason == "no_text"


def test_enormous_prompt_is_fast_and_escalates(router: ClassifierRouter) -> None:
    big = (SQL + " ") * 6000  # ~400k characters, ~100k tokens
    t0 = time.perf_counter()
    d = router.decide(chat(big))
    elapsed = time.perf_counter() - t0
    assert d.target == "llm" and d.reason.startswith("too_long ~") and d.reason.endswith(">4096 context")
    assert elapsed < 0.05


def test_requested_completion_counts_toward_context(router: ClassifierRouter) -> None:
    assert router.decide(chat(SQL, max_tokens=5000)).reason.startswith("too_long")
    assert router.decide(chat(SQL, max_tokens=100)).target == "slm"


@pytest.mark.parametrize("text", [
    "s̷̡̛̩̣̈́͂̕e̶̢̛̲̓l̸̰͙̍͝e̵̠̎c̷̹̓ẗ̴̢͍́ ̷̧̈́*̸̰̈́",  # zalgo
    "\u202e\u200b\u200b\u200b\u200b\u200d\u200d\u200dselect\u200b\u200b\u200b\u200b",  # bidi override, zero-width
    "\ud800\udfff\ud834 lone surrogates",  # unpaired surrogates, as a lax JSON parser would give
])
def test_odd_unicode_escalates(router: ClassifierRouter, text: str) -> None:
    d = router.decide(chat(text))
    assert d.target == "llm" and d.reason.startswith("odd_unicode"), d.reason


def test_unknown_script_is_out_of_vocabulary(router: ClassifierRouter) -> None:
    d = router.decide(chat("请帮我写一个查询\uff0c统计每个地区上个月的销售总额"))
    assert d.target == "llm" and d.reason.startswith("out_of_vocabulary known=")


def test_internal_error_is_caught(router: ClassifierRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> Any:
        raise RuntimeError("featurizer exploded")

    monkeypatch.setattr(router.model.featurizer, "vector", boom)
    assert router.decide(chat(SQL)).reason == "router_error RuntimeError"


def test_scores_are_probabilities(router: ClassifierRouter) -> None:
    d = router.decide(chat("how do I fix IndexError: list index out of range in python"))
    assert sum(d.scores.values()) == pytest.approx(1.0, abs=1e-3)
    assert np.isclose(max(d.scores.values()), d.confidence, atol=1e-3)
