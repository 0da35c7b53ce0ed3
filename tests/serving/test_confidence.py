"""Answer confidence from logprobs (serving.confidence): the request edit, the measure, the verdict and
restoring what the client asked for. Bodies have the shapes vLLM's OpenAI server returns; the real
server is exercised in tests/integration/test_vllm_confidence.py."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from serving.confidence import (
    Asked,
    Check,
    LowConfidence,
    ask,
    checkable,
    discarded,
    judge,
    measure,
    restore,
)


def chat_body(tokens: list[tuple[str, float, list[tuple[str, float]]]]) -> dict[str, Any]:
    content = [{"token": t, "logprob": lp, "bytes": list(t.encode()),
                "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())} for a, b in tops]}
               for t, lp, tops in tokens]
    return {"id": "x", "object": "chat.completion", "model": "sql",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(t for t, _, _ in tokens)},
                         "logprobs": {"content": content}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": len(tokens), "total_tokens": 12 + len(tokens)}}


def completion_body() -> dict[str, Any]:
    return {"object": "text_completion", "model": "sql",
            "choices": [{"index": 0, "text": "ab", "finish_reason": "length", "logprobs": {
                "tokens": ["a", "b"], "token_logprobs": [-0.5, -1.5], "text_offset": [0, 1],
                "top_logprobs": [{"a": -0.5, "x": -2.0, "y": -3.0}, {"z": -1.0, "b": -1.5, "w": -4.0}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


TOKENS = [("SE", -0.1, [("SE", -0.1), ("se", -2.4)]), ("LECT", -2.0, [("LECT", -2.0), ("T", -2.5)]),
          (" *", -0.9, [(" *", -0.9), (" a", -1.0)])]


def test_ask_edits_the_slm_request_and_remembers_the_client() -> None:
    payload: dict[str, Any] = {"messages": []}
    assert ask("chat", payload) == Asked(False, 0)
    assert payload["logprobs"] is True and payload["top_logprobs"] == 2
    payload = {"messages": [], "logprobs": True, "top_logprobs": 5}
    assert ask("chat", payload) == Asked(True, 5) and payload["top_logprobs"] == 5
    payload = {"prompt": "x", "logprobs": 0}
    assert ask("completion", payload) == Asked(True, 0) and payload["logprobs"] == 2
    payload = {"prompt": "x"}
    assert ask("completion", payload) == Asked(False, 0) and payload["logprobs"] == 2
    assert checkable("chat", {}) and checkable("completion", {"echo": False})
    assert not checkable("completion", {"echo": True}) and not checkable("embedding", {})


def test_measure_mean_logprob_and_margin() -> None:
    conf = measure("chat", chat_body(TOKENS))
    assert conf is not None and conf.tokens == 3
    assert conf.mean_logprob == pytest.approx((-0.1 - 2.0 - 0.9) / 3)
    assert conf.mean_margin == pytest.approx((2.3 + 0.5 + 0.1) / 3)
    comp = measure("completion", completion_body())
    assert comp is not None and comp.mean_logprob == pytest.approx(-1.0)
    assert comp.mean_margin == pytest.approx((1.5 + 0.5) / 2)
    assert measure("chat", {"choices": [{"message": {}, "logprobs": None}]}) is None
    inf = chat_body([("a", -math.inf, []), ("b", -1.0, [])])
    assert measure("chat", inf) == measure("chat", chat_body([("b", -1.0, [])]))


def test_low_answers_raise_with_their_usage() -> None:
    body = chat_body(TOKENS)
    with pytest.raises(LowConfidence) as info:
        judge("chat", body, Check("sql", -0.5, None), Asked(False, 0), "sql-backend")
    exc = info.value
    assert exc.reason == "low_answer_confidence sql=-1.00<-0.50"
    assert discarded(exc) == {"slm_discarded_backend": "sql-backend", "slm_discarded_tokens": "15",
                              "slm_discarded_reason": "low_answer_confidence sql=-1.00<-0.50",
                              "answer_logprob": "-1.0000", "answer_margin": "0.9667"}
    with pytest.raises(LowConfidence, match=r"low_answer_margin sql=0\.97<1\.00"):
        judge("chat", chat_body(TOKENS), Check("sql", -5.0, 1.0), Asked(False, 0), "b")


def test_served_answers_look_as_if_never_asked() -> None:
    body = chat_body(TOKENS)
    extra = judge("chat", body, Check("sql", -1.5, None), Asked(False, 0), "b")
    assert extra == {"answer_logprob": "-1.0000", "answer_margin": "0.9667"}
    assert body["choices"][0]["logprobs"] is None
    body = chat_body(TOKENS)
    judge("chat", body, Check("sql", -1.5, None), Asked(True, 1), "b")
    assert [len(t["top_logprobs"]) for t in body["choices"][0]["logprobs"]["content"]] == [1, 1, 1]
    assert body["choices"][0]["logprobs"]["content"][1]["top_logprobs"][0]["token"] == "LECT"
    body = chat_body(TOKENS)
    same = copy.deepcopy(body)
    restore("chat", body, Asked(True, 2))
    assert body == same


def test_completion_trim_keeps_the_sampled_token() -> None:
    body = completion_body()
    restore("completion", body, Asked(True, 1))
    # Top-1 plus the sampled token when it is not the top one (vLLM's own rule for `logprobs: 1`).
    assert body["choices"][0]["logprobs"]["top_logprobs"] == [{"a": -0.5}, {"z": -1.0, "b": -1.5}]
    body = completion_body()
    restore("completion", body, Asked(True, 0))
    assert body["choices"][0]["logprobs"]["top_logprobs"] == [{"a": -0.5}, {"b": -1.5}]
    body = completion_body()
    restore("completion", body, Asked(False, 0))
    assert body["choices"][0]["logprobs"] is None
