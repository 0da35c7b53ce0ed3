"""Which request fields go upstream, and how: the trust boundary between a client's body and a backend.

A client's body is untrusted. litellm reads many keyword arguments as its own settings (``api_base``,
``fallbacks``, ``model_list``, ``mock_response``, ``custom_llm_provider``, ``headers``, credentials of
other providers, ...), and vLLM reads some body fields as server-side code or state (``chat_template``,
``logits_processors``, ``kv_transfer_params``, ...). So:

- litellm gets as keyword arguments only the OpenAI request parameters of the endpoint
  (``LLM_KWARGS``), never anything else;
- an SLM (vLLM) gets the OpenAI parameters plus vLLM's sampling and structured-output parameters
  (``VLLM_PARAMS``);
- every other field is dropped, or, when the policy says ``unknown_fields: pass`` or names it in
  ``extra_fields``, sent inside the provider's request body (litellm's ``extra_body``; the JSON body
  for vLLM). Names in ``NEVER`` are dropped even then: they are settings of litellm or of vLLM (or of
  a LiteLLM proxy used as a provider), not request content.

Where the gateway connects and with which key comes from the policy alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["chat", "completion", "embedding"]

_CHAT_KWARGS = frozenset({
    "messages", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "top_logprobs",
    "max_tokens", "max_completion_tokens", "modalities", "audio", "prediction", "n", "parallel_tool_calls",
    "presence_penalty", "reasoning_effort", "verbosity", "response_format", "seed", "service_tier", "stop",
    "store", "stream", "stream_options", "temperature", "tool_choice", "tools", "top_p", "user",
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "web_search_options",
})
_COMPLETION_KWARGS = frozenset({
    "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
})
_EMBEDDING_KWARGS = frozenset({"input", "dimensions", "encoding_format", "user"})

LLM_KWARGS: Mapping[str, frozenset[str]] = {
    "chat": _CHAT_KWARGS, "completion": _COMPLETION_KWARGS, "embedding": _EMBEDDING_KWARGS}
"""OpenAI request parameters passed to litellm as keyword arguments, per endpoint (``model`` is always
the policy's)."""

LLM_BODY: Mapping[str, frozenset[str]] = {"chat": frozenset({"metadata"}), "completion": frozenset(),
                                          "embedding": frozenset()}
"""OpenAI request parameters that litellm would read as its own setting under the same name: they go
into the provider's body (``extra_body``) instead."""

_VLLM_SAMPLING = frozenset({
    "top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "ignore_eos", "stop_token_ids",
    "include_stop_str_in_output", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "use_beam_search", "allowed_token_ids", "bad_words",
    "guided_json", "guided_regex", "guided_choice", "guided_grammar", "guided_decoding_backend",
    "guided_whitespace_pattern", "structured_outputs", "add_special_tokens", "return_tokens_as_token_ids",
})
VLLM_PARAMS: Mapping[str, frozenset[str]] = {
    "chat": _CHAT_KWARGS | LLM_BODY["chat"] | _VLLM_SAMPLING
    | {"add_generation_prompt", "continue_final_message", "echo"},
    "completion": _COMPLETION_KWARGS | _VLLM_SAMPLING,
    "embedding": _EMBEDDING_KWARGS | {"truncate_prompt_tokens", "add_special_tokens"},
}
"""Fields an SLM (vLLM's OpenAI server) receives by default, per endpoint."""

NEVER = frozenset({
    # litellm settings that pick a host, a provider, a credential, headers, a mock or a retry plan
    "model", "api_base", "base_url", "api_key", "api_version", "api_type", "organization", "project",
    "custom_llm_provider", "deployment_id", "model_list", "fallbacks", "context_window_fallback_dict",
    "max_fallbacks", "mock_response", "mock_tool_calls", "mock_timeout", "mock_testing_fallbacks",
    "mock_testing_rate_limit_error", "headers", "extra_headers", "extra_query", "extra_body", "timeout",
    "request_timeout", "stream_timeout", "num_retries", "max_retries", "retry_policy", "retry_strategy",
    "client", "shared_session", "litellm_params", "litellm_metadata", "litellm_call_id",
    "litellm_logging_obj", "litellm_credential_name", "proxy_server_request", "secret_fields", "azure",
    "azure_ad_token", "azure_ad_token_provider", "azure_username", "azure_password", "tenant_id",
    "client_id", "client_secret", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "aws_region_name", "aws_profile_name", "aws_role_name", "aws_web_identity_token", "aws_bedrock_runtime_endpoint",
    "vertex_project", "vertex_location", "vertex_credentials", "vertex_ai_project", "vertex_ai_location",
    "region_name", "ssl_verify", "input_cost_per_token", "output_cost_per_token", "cache", "caching",
    "logger_fn", "callbacks", "success_callback", "failure_callback", "guardrails", "tags",
    "user_api_key", "use_litellm_proxy", "use_in_pass_through", "allowed_openai_params",
    # vLLM fields that run or load server-side code, or reach into the server's state
    "chat_template", "chat_template_kwargs", "logits_processors", "vllm_xargs", "kv_transfer_params",
    "mm_processor_kwargs", "cache_salt", "priority", "request_id", "lora_request", "tool_parser",
    "reasoning_parser", "documents",
})
"""Never sent upstream in any form, whatever the policy says (checked at policy load too)."""


@dataclass(frozen=True, slots=True)
class FieldRules:
    """The policy's say on fields outside the built-in lists."""

    unknown: Literal["drop", "pass"] = "drop"
    extra: frozenset[str] = frozenset()

    def passes(self, name: str) -> bool:
        return (self.unknown == "pass" or name in self.extra) and not never(name)


def for_llm(kind: Kind, body: Mapping[str, Any], rules: FieldRules) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(kwargs, extra_body)`` for a litellm call: OpenAI parameters as keyword arguments, everything
    else the policy lets through as provider body fields, the rest dropped."""
    named, in_body = LLM_KWARGS[kind], LLM_BODY[kind]
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in body.items():
        if name in named:
            kwargs[name] = value
        elif name in in_body or rules.passes(name):
            extra[name] = value
    return kwargs, extra


def for_slm(kind: Kind, body: Mapping[str, Any], rules: FieldRules) -> dict[str, Any]:
    """The JSON body for vLLM (without ``model``, which the caller sets)."""
    allowed = VLLM_PARAMS[kind]
    return {name: value for name, value in body.items() if name in allowed or rules.passes(name)}


_NEVER_LIKE = re.compile(
    r"^(litellm|aws|azure|vertex|vertex_ai|anthropic|openai|bedrock|gcs|s3|langfuse|langsmith|dd|arize|mock)_"
    r"|_(key|secret|token|base|url|endpoint|host|port|file|path|credentials|provider|region|headers)$")
"""Names shaped like a setting (a provider's credential, endpoint or logging sink) are never passed either."""


def never(name: str) -> bool:
    """True for a field that no policy can send upstream."""
    return name in NEVER or _NEVER_LIKE.search(name) is not None
