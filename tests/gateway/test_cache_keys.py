"""Canonical cache keys and cache control parsing (pure functions)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cache.control import parse_control, without_cache_field
from gateway.cache.keys import cache_key, canonical_body, is_deterministic

BASE: dict[str, Any] = {
    "model": "auto",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "temperature": 0,
    "max_tokens": 16,
}


def key(body: dict[str, Any], tenant: str = "t1", kind: Any = "chat") -> str:
    return cache_key("p:", tenant, kind, body)


def test_key_order_and_whitespace_do_not_matter() -> None:
    a = orjson.loads(b'{"model":"auto","temperature":0,"max_tokens":16,"messages":'
                     b'[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}')
    b = orjson.loads(b'{\n  "max_tokens": 16,\n  "messages": [ {"content": "be brief", "role": "system"},\n'
                     b'   {"content": "hi", "role": "user"} ],\n  "temperature": 0.0,  "model": "auto"\n}')
    assert key(a) == key(b) == key(BASE)


def test_fields_that_do_not_change_the_answer_are_ignored() -> None:
    noisy = {**BASE, "stream": True, "stream_options": {"include_usage": True}, "user": "u-42",
             "cache": {"ttl": 5}, "metadata": {"x": "y"}, "store": False, "temperature": 0.0,
             "seed": None, "messages": [{**m, "name": None} for m in BASE["messages"]]}
    assert key(noisy) == key(BASE)


@pytest.mark.parametrize("change", [
    {"model": "sql"},
    {"temperature": 0.2},
    {"top_p": 0.5},
    {"max_tokens": 17},
    {"stop": ["\n"]},
    {"seed": 7},
    {"n": 2},
    {"presence_penalty": 0.5},
    {"frequency_penalty": 0.5},
    {"logit_bias": {"50256": -100}},
    {"logprobs": True},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"tool_choice": "required"},
    {"response_format": {"type": "json_object"}},
    {"some_future_param": 1},
    {"messages": [{"role": "user", "content": "hi "}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]},
])
def test_anything_that_can_change_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


def test_scopes_tenant_and_endpoint() -> None:
    assert key(BASE, tenant="a") != key(BASE, tenant="b")
    assert key(BASE, kind="chat") != key(BASE, kind="completion")
    k = key(BASE, tenant="acme")
    assert k.startswith("p:acme:chat:") and len(k.rsplit(":", 1)[1]) == 64


def test_namespace_with_separator_cannot_collide() -> None:
    # "a:chat" + kind "chat" must not equal namespace "a" with some other layout.
    assert cache_key("p:", "a:chat", "chat", BASE) != cache_key("p:", "a", "chat", BASE)


def test_stop_string_equals_one_item_list() -> None:
    assert key({**BASE, "stop": "\n"}) == key({**BASE, "stop": ["\n"]})


def test_canonical_body_keeps_content_exactly() -> None:
    body = canonical_body({**BASE, "messages": [{"role": "user", "content": "  two  spaces "}]})
    assert body["messages"][0]["content"] == "  two  spaces "


@given(st.permutations(list({**BASE, "top_p": 0.9, "seed": 3, "stop": ["x"]}.items())))
def test_key_is_independent_of_field_order(items: list[tuple[str, Any]]) -> None:
    assert key(dict(items)) == key({**BASE, "top_p": 0.9, "seed": 3, "stop": ["x"]})


def test_nested_order_is_irrelevant() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    shuffled = dict(reversed(list(schema.items())))
    rnd = random.Random(1)
    props = list(schema["properties"].items())  # type: ignore[attr-defined]
    rnd.shuffle(props)
    shuffled["properties"] = dict(props)
    fmt = lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}  # noqa: E731
    assert key({**BASE, "response_format": fmt(schema)}) == key({**BASE, "response_format": fmt(shuffled)})


@pytest.mark.parametrize(("body", "expected"), [
    ({"temperature": 0}, True),
    ({"temperature": 0.0}, True),
    ({"temperature": 0.7, "seed": 1}, True),
    ({"seed": 0}, True),
    ({}, False),
    ({"temperature": 0.7}, False),
    ({"temperature": None}, False),
    ({"temperature": False}, False),
])
def test_is_deterministic(body: dict[str, Any], expected: bool) -> None:
    assert is_deterministic(body) is expected


# -- cache control ---------------------------------------------------------------------------------

def test_control_defaults() -> None:
    ctl = parse_control(None, {})
    assert (ctl.no_cache, ctl.no_store, ctl.ttl_s) == (False, False, None)


def test_control_body_field() -> None:
    ctl = parse_control({"no-cache": True, "no-store": True, "ttl": 30})
    assert (ctl.no_cache, ctl.no_store, ctl.ttl_s) == (True, True, 30)
    assert parse_control({"no_cache": True}).no_cache


@pytest.mark.parametrize("field", [{"no-cache": "yes"}, {"ttl": "10"}, {"ttl": -3}, {"ttl": True}, "no-cache",
                                   [1], 5])
def test_control_malformed_values_are_ignored(field: Any) -> None:
    ctl = parse_control(field)
    assert (ctl.no_cache, ctl.no_store, ctl.ttl_s) == (False, False, None)


@pytest.mark.parametrize(("header", "no_cache", "no_store"), [
    ("no-cache", True, False),
    ("no-store", False, True),
    ("No-Cache, no-store", True, True),
    ("max-age=0, no-store", False, True),
    ("private", False, False),
])
def test_control_headers(header: str, no_cache: bool, no_store: bool) -> None:
    for headers in ({"cache-control": header}, {"Cache-Control": header}):
        ctl = parse_control(None, headers)
        assert (ctl.no_cache, ctl.no_store) == (no_cache, no_store)


def test_control_merges_body_and_headers() -> None:
    ctl = parse_control({"ttl": 9, "no-store": True}, {"cache-control": "no-cache"})
    assert (ctl.no_cache, ctl.no_store, ctl.ttl_s) == (True, True, 9)


def test_without_cache_field_copies() -> None:
    body = {**BASE, "cache": {"no-cache": True}}
    clean, field = without_cache_field(body)
    assert "cache" not in clean and field == {"no-cache": True}
    assert "cache" in body  # the original is untouched
