"""Routing policy: the one YAML file that configures the gateway.

Every model here is strict (``extra="forbid"``): a misspelt key is an error with its field path, found
once at start-up rather than silently ignored. Strings may reference the environment as ``${NAME}`` or
``${NAME:-default}``; that is how URLs and secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class PolicyError(Exception):
    """A policy file that cannot be used; ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"invalid policy {source}:\n" + "\n".join(f"  {e}" for e in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    """Interface `slmgw serve` binds to unless --host is given."""
    port: int = Field(8080, ge=1, le=65535)
    """TCP port `slmgw serve` listens on unless --port is given."""
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Requests with a larger body are refused with 413 before they are parsed."""
    max_messages: int = Field(1000, ge=1)
    """Chat requests with more messages than this are refused with 400."""
    unknown_fields: Literal["drop", "pass"] = "drop"
    """Body fields outside the gateway's allowlist of OpenAI (and, for SLMs, vLLM sampling) parameters:
    `drop` them, or `pass` them inside the provider's request body (litellm's `extra_body`; the JSON body
    for vLLM). Either way they are never litellm settings, and names that are settings of litellm or
    vLLM (api_base, fallbacks, mock_response, chat_template, ...) are always dropped (docs/security.md)."""
    extra_fields: list[str] = Field(default_factory=list)
    """Field names passed inside the provider's request body even with `unknown_fields: drop`, e.g.
    `[top_k]` for a provider that takes it."""

    @field_validator("extra_fields")
    @classmethod
    def _no_settings(cls, value: list[str]) -> list[str]:
        from serving.params import never

        bad = [name for name in value if never(name)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a client may never set these (they pick a host, a provider, "
                             "a credential, headers or server-side code)")
        return value


class ApiKey(_Strict):
    key: str
    """The bearer token clients send (`Authorization: Bearer ...`)."""
    tenant: str = "default"
    """Name the key's requests are recorded and cached under."""

    @field_validator("key")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty key (is its environment variable set?); set it or remove the entry")
        return value


class KeyStoreConfig(_Strict):
    """Keys created with `slmgw keys create`, stored hashed in the ledger's database (docs/security.md)."""

    enabled: bool = False
    """Accept keys from the key store (table slmgw_api_keys in the ledger.url database) besides the
    policy's api_keys."""
    refresh_s: float = Field(5.0, gt=0, le=300)
    """How often each gateway process reloads the store; a revoked key stops working within this long."""


class AuthConfig(_Strict):
    api_keys: list[ApiKey] = Field(default_factory=list)
    """Client keys. Empty means the gateway accepts requests without a key (development only)."""
    admin_keys: list[str] = Field(default_factory=list)
    """Keys for the /admin routes."""
    open: bool = False
    """Serve without client keys on a non-loopback host. With no `api_keys` and no key store, `slmgw
    serve` refuses to bind anything but a loopback address unless this is true (it warns either way)."""
    key_store: KeyStoreConfig = KeyStoreConfig()
    """Hashed client keys managed with `slmgw keys` (per-key budgets and rate limits)."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        # A bare string is the short form of {key: ...}.
        if isinstance(value, list):
            return [{"key": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("admin_keys")
    @classmethod
    def _no_empty(cls, value: list[str]) -> list[str]:
        # An unset ${VAR:-} must not quietly remove the key (and with it, perhaps, all protection).
        for i, key in enumerate(value):
            if not key:
                raise ValueError(f"entry {i} is empty (is its environment variable set?); set it or remove it")
        return value


class SlmCost(_Strict):
    """SLM cost, either per token or from GPU time (formulas in docs/costs.md).

    Per token: ``cost = (prompt + completion tokens) / 1e6 * usd_per_1m_tokens``.
    GPU time: ``cost = (prompt + completion tokens) / (tokens_per_second * 3600) * gpu_hour_usd``.
    """

    usd_per_1m_tokens: float | None = Field(default=None, ge=0)
    """Price per 1M tokens (prompt + completion), e.g. a provider's price or your own amortised figure."""
    gpu_hour_usd: float | None = Field(default=None, ge=0)
    """What one hour of the GPU(s) serving this model costs; needs tokens_per_second."""
    tokens_per_second: float | None = Field(default=None, gt=0)
    """Aggregate throughput (prompt + completion tokens per second, all concurrent requests together)
    the GPU sustains at your usual load; the GPU-hour is spread over this many tokens."""

    @model_validator(mode="after")
    def _one_way(self) -> SlmCost:
        per_token = self.usd_per_1m_tokens is not None
        per_hour = self.gpu_hour_usd is not None or self.tokens_per_second is not None
        if per_token and per_hour:
            raise ValueError("give either usd_per_1m_tokens or gpu_hour_usd + tokens_per_second, not both")
        if per_hour and (self.gpu_hour_usd is None or self.tokens_per_second is None):
            raise ValueError("gpu_hour_usd needs tokens_per_second (and the other way round)")
        return self


class SlmBackend(_Strict):
    """A model served by vLLM's OpenAI-compatible server (a base model or one LoRA adapter)."""

    base_urls: list[str] = Field(min_length=1)
    """OpenAI API roots of the vLLM replicas serving this model, e.g. http://vllm:8000/v1.
    `base_url: URL` is accepted for a single replica."""
    model: str = Field(min_length=1)
    """Served model name on vLLM: the LoRA adapter name from --lora-modules, or --served-model-name."""
    context_length: int = Field(4096, ge=16)
    """The model's context window (vLLM --max-model-len) in tokens."""
    timeout_s: float = Field(60.0, gt=0)
    """Time allowed for a whole answer, and for a stream between two events (a stream may run longer as
    long as it keeps moving). On expiry before anything reached the client the request escalates to the
    fallback LLM; later, the stream ends with an error event."""
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    """Largest answer body, and largest single stream event, read from this SLM; a larger one is an
    upstream failure (`slm_response_too_large`) and the request escalates, so a misbehaving server
    cannot grow the gateway's memory."""
    connect_timeout_s: float = Field(2.0, gt=0)
    """Connect timeout; a refused or slow connection escalates quickly."""
    api_key: str | None = None
    """Bearer token for vLLM's --api-key, if it has one."""
    base_model: str | None = None
    """For `slmgw serving plan`: the base model vLLM loads (HF id or path)."""
    adapter_path: str | None = None
    """For `slmgw serving plan`: the LoRA adapter directory served as `model`; unset when `model`
    is the base model itself."""
    lora_rank: int | None = Field(None, ge=1)
    """For `slmgw serving plan`: the adapter's LoRA rank; a server's --max-lora-rank is the largest
    rank on it (vLLM's default, 16, when none is given)."""
    vllm_args: list[str] = Field(default_factory=list)
    """For `slmgw serving plan`: extra vLLM arguments for the server(s) this backend runs on, e.g.
    ["--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.9"]."""
    supports: list[Literal["tools", "images", "json_schema"]] = Field(default_factory=list)
    """Request features this SLM handles. A request that needs one not listed (tool definitions, image
    inputs, response_format json_schema) escalates to the LLM with reason `unsupported:<feature>`."""
    health_interval_s: float = Field(5.0, gt=0)
    """Seconds between polls of each replica's /health and /v1/models."""
    max_backoff_s: float = Field(30.0, gt=0)
    """Circuit breaker: a failed replica is probed again after 1 s, then 2, 4, ... up to this long."""
    cost: SlmCost | None = None
    """What this SLM costs to run; see `SlmCost`."""

    @model_validator(mode="before")
    @classmethod
    def _single_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "base_url" in data:
            data = dict(data)
            url = data.pop("base_url")
            if "base_urls" in data:
                raise ValueError("give either base_url or base_urls, not both")
            data["base_urls"] = [url]
        return data

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in urls]


class LlmBackend(_Strict):
    """A hosted LLM reached through litellm."""

    model: str = Field(min_length=1)
    """litellm model string, e.g. openai/gpt-4o-mini, anthropic/claude-3-5-haiku-latest."""
    api_base: str | None = None
    """Override of the provider's API root (Azure, a proxy, or a local OpenAI-compatible server)."""
    api_key: str | None = None
    """Provider key; leave unset to let litellm read the provider's usual environment variable."""
    timeout_s: float = Field(120.0, gt=0)
    """Per-attempt timeout."""
    max_retries: int = Field(0, ge=0, le=10)
    """Retries of a failed call on this backend before the next backend in the fallback chain."""
    input_usd_per_1m: float | None = Field(None, ge=0)
    """Price override per 1M prompt tokens; default: litellm's bundled cost map."""
    output_usd_per_1m: float | None = Field(None, ge=0)
    """Price override per 1M completion tokens; default: litellm's bundled cost map."""

    @field_validator("api_base", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


class Domain(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Domain label, as the router's classes name it; also the public model name clients may ask for."""
    description: str = ""
    """What belongs here (documentation, shown in /v1/models)."""
    backend: str
    """Name of the SLM backend (under slm_backends) that serves this domain."""
    keywords: list[str] = Field(default_factory=list)
    """Keyword router only: words or phrases (case-insensitive) that mark a request as this domain."""
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    """Per-domain confidence threshold; defaults to router.threshold."""
    hard_threshold: float | None = Field(None, ge=0.0, le=1.0)
    """Send a request routed here to the LLM instead when the difficulty model
    (router.difficulty_model_path) gives P(the SLM's answer is worse than the LLM's) >= this (reason
    `hard sql p=0.81>=0.70`). None: never (docs/quality.md)."""
    min_answer_confidence: float | None = Field(None, le=0.0)
    """Non-streamed SLM answers whose mean token logprob is below this are discarded and escalated to
    the LLM (`low_answer_confidence sql=-1.9<-1.2`); the gateway asks vLLM for logprobs and strips them
    unless the client asked. None: answers are not checked (docs/quality.md)."""
    min_answer_margin: float | None = Field(None, ge=0.0)
    """Like min_answer_confidence, on the mean margin between the top two tokens' logprobs
    (`low_answer_margin sql=0.12<0.30`). None: not checked."""
    stream_holdback_tokens: int | None = Field(None, ge=1, le=512)
    """Streams: hold back the first N tokens of the SLM's answer, judge them against
    min_answer_confidence / min_answer_margin, then release them or escalate (adds the time of N tokens
    to the time to first token). None: streams are not judged."""


class RouterConfig(_Strict):
    kind: Literal["keyword", "classifier"] = "keyword"
    """keyword: match domain keywords (no training); classifier: a trained scikit-learn model."""
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """Confidence a request needs to go to its domain's SLM; below it, the fallback LLM answers."""
    model_path: str | None = None
    """Classifier router only: path of the trained router artifact (relative to the policy file)."""
    difficulty_model_path: str | None = None
    """Difficulty model (`slmgw quality train`, relative to the policy file) used by domains that set
    hard_threshold."""
    max_chars: int = Field(4000, ge=100)
    """Cap on the text the router looks at, so an enormous prompt does not slow the decision."""
    shadow: bool = False
    """Shadow mode: every request goes to the fallback LLM while the ledger records where the router
    would have sent it (`would_route`), so reports can show the would-be savings before SLMs get traffic."""

    @model_validator(mode="after")
    def _needs_model(self) -> RouterConfig:
        if self.kind == "classifier" and not self.model_path:
            raise ValueError("router.kind 'classifier' needs router.model_path")
        return self


class FallbackConfig(_Strict):
    llm: list[str] = Field(min_length=1)
    """LLM backends tried in order for general, low-confidence or failed requests. A single name is
    accepted."""

    @field_validator("llm", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class EmbeddingsConfig(_Strict):
    backend: str
    """Backend (an slm_backends or llm_backends name) that answers /v1/embeddings for model 'auto'."""


class CacheConfig(_Strict):
    """Exact-match response cache (see docs/cache.md).

    By default only deterministic requests (temperature 0, or a seed) are cached; domains listed in
    ``nondeterministic_domains`` opt in for every request. Entries are scoped per tenant and endpoint.
    """

    enabled: bool = True
    """Master switch; off means every response says `x-slmgw-cache: bypass`."""
    redis_url: str | None = None
    """Redis URL; unset means an in-process LRU (one gateway process only)."""
    key_prefix: str = "slmgw:cache:"
    """Prefix of every Redis key, so one Redis can serve several gateways or other uses."""
    default_ttl_s: Annotated[int, Field(ge=1)] = 3600
    """Lifetime of a stored answer when its domain has no entry in `domain_ttl_s`."""
    domain_ttl_s: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    """Per-domain lifetime in seconds, by domain name."""
    max_ttl_s: Annotated[int, Field(ge=1)] = 7 * 86400
    """Upper bound on a TTL a client asks for with the `cache: {"ttl": N}` body field."""
    nondeterministic_domains: list[str] = Field(default_factory=list)
    """Domains whose answers are cached even at temperature > 0 without a seed; `*` means all."""
    namespaces: dict[str, str] = Field(default_factory=dict)
    """Tenant -> cache namespace. Tenants mapped to the same namespace share answers; a tenant not
    listed gets its own namespace (its name)."""
    max_entry_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    """Answers larger than this (serialised, stream chunks included) are not stored."""
    memory_max_entries: Annotated[int, Field(ge=1)] = 10_000
    """In-process LRU only: most entries kept."""
    memory_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """In-process LRU only: most bytes kept."""
    redis_op_timeout_ms: Annotated[float, Field(gt=0)] = 5.0
    """Time budget of one Redis operation (pool wait, connect and round trip); past it, a miss."""
    redis_connect_timeout_ms: Annotated[float, Field(gt=0)] = 50.0
    """Socket connect timeout for new Redis connections."""
    redis_failure_threshold: Annotated[int, Field(ge=1)] = 3
    """Consecutive timeouts after which Redis is treated as down (a refused connection counts at once)."""
    redis_backoff_max_s: Annotated[float, Field(gt=0)] = 30.0
    """While Redis is down, one probe after a back-off that doubles from 0.5 s up to this."""
    outage_log_interval_s: Annotated[float, Field(gt=0)] = 60.0
    """An ongoing Redis outage is logged at most once per this many seconds."""


class LedgerConfig(_Strict):
    """Request ledger: one row per request, written in batches off the response path."""

    url: str = "sqlite+aiosqlite:///slmgw-ledger.sqlite"
    """sqlite:///FILE (a relative FILE is resolved against the policy's directory) or
    postgresql://USER:PASSWORD@HOST/DB for several gateway replicas. SQLAlchemy-style driver suffixes
    (sqlite+aiosqlite, postgresql+asyncpg) are accepted; rows are written with the stdlib sqlite3 module
    or asyncpg."""
    store_prompts: bool = False
    """Store the prompt with each row (a chat's messages as JSON, masked when `privacy.action: mask`), so
    `slmgw policy simulate` can replay recorded traffic through another policy. Off by default (privacy):
    only counts and routing facts."""
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most rows written in one INSERT."""
    flush_interval_s: float = Field(default=1.0, gt=0)
    """How often buffered rows are written; a full batch is written at once."""
    buffer_max: int = Field(default=10_000, ge=1)
    """Rows held in memory while the store is unreachable; beyond this they spill to `spill_dir`."""
    memory_max_rows: int = Field(default=200_000, ge=1)
    """Hard bound on rows held in memory when they can be neither written nor spilled (store down and
    `spill_dir` unwritable). Rows beyond it are dropped, each one counted in
    `slmgw_ledger_rows_dropped_total` and logged with its request id: the worker's memory stays bounded."""
    spill_dir: str = ".slmgw/ledger-spill"
    """Directory for spilled rows (JSONL files, relative to the policy's directory); replayed into the
    store when it is back, then deleted."""
    write_timeout_s: float = Field(default=10.0, gt=0)
    """A batch write taking longer than this counts as a failure (the rows are kept and retried)."""
    retry_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between retries while the store is down (the wait doubles from flush_interval_s)."""
    migrate: bool = True
    """Bring the ledger's schema to the shipped revision at start-up. The gateway reads the revision
    itself; only when it is behind (or the tables are missing) does it run the alembic migrations, in a
    short-lived child process (`python -m gateway.ledger`), so serving workers never load alembic."""
    retention_days: float | None = Field(default=None, gt=0)
    """Keep raw rows this many days; `slmgw ledger prune` deletes older ones after rolling their hours
    up (reports over older time then come from the hourly rollups, which are kept). None keeps all."""
    maintenance_interval_s: float | None = Field(default=None, gt=0)
    """When set, `slmgw ledger serve-reports` rolls up finished hours and, with `retention_days`, prunes
    expired raw rows this often (otherwise run `slmgw ledger rollup` / `prune` from cron)."""


class CostsConfig(_Strict):
    """Cost model: prices of actual routes and of the savings baseline (docs/costs.md)."""

    baseline_llm: str | None = None
    """litellm model string the app would have used without the gateway; default: the model of the
    first fallback LLM backend (with that backend's price overrides)."""
    baseline_input_usd_per_1m: float | None = Field(default=None, ge=0)
    """Baseline price per 1M prompt tokens; default: litellm's bundled cost map for baseline_llm."""
    baseline_output_usd_per_1m: float | None = Field(default=None, ge=0)
    """Baseline price per 1M completion tokens; default: litellm's bundled cost map for baseline_llm."""
    require_prices: bool = True
    """Refuse to start when an LLM backend's model has no known price (not in litellm's map and no
    override). False prices such a backend at 0 and logs a warning (its costs are then understated)."""


class TenantLimits(_Strict):
    """Limits of one tenant's keys; a key from the key store may set its own rpm/tpm/budget."""

    rpm: int | None = Field(None, ge=1)
    """Requests per minute per key (unset: unlimited)."""
    tpm: int | None = Field(None, ge=1)
    """Tokens per minute per key: prompt estimate + max_tokens up front, corrected by the actual usage."""
    budget_usd: float | None = Field(None, ge=0)
    """USD the tenant may spend per budget period (summed from the ledger's costs; unset: unlimited)."""
    max_tokens: int | None = Field(None, ge=1)
    """Cap on a request's max_tokens / max_completion_tokens (400 above it; requests without one get it)."""


class LimitsConfig(_Strict):
    """Rate limits and budgets (docs/security.md). Rate limits are shared by every replica through Redis."""

    redis_url: str | None = None
    """Redis holding the rate-limit buckets; unset means rate limits are not enforced."""
    key_prefix: str = "slmgw:rl:"
    """Prefix of the rate-limit keys in Redis."""
    default: TenantLimits = TenantLimits()
    """Limits of tenants not listed in `tenants`."""
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)
    """Per-tenant limits, by tenant name."""
    budget_period: Literal["day", "month", "total"] = "month"
    """Budgets cover spend since the start of the UTC day, the UTC month, or all time."""
    budget_cache_s: float = Field(5.0, gt=0)
    """How long a spend total read from the ledger is reused before it is summed again."""
    default_completion_tokens: int = Field(256, ge=1)
    """Completion tokens reserved up front for a request that sets no max_tokens (and no cap applies)."""
    redis_timeout_ms: float = Field(50.0, gt=0)
    """Time budget of one rate-limit call to Redis; past it (or with Redis down) requests pass (fail open)."""
    fail_open_log_interval_s: float = Field(60.0, gt=0)
    """While Redis is unreachable, the fail-open warning is logged at most once per this many seconds."""

    def for_tenant(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default)


class PrivacyPattern(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    """Label used in reasons, ledger rows and the mask text ([NAME])."""
    regex: str = Field(min_length=1)
    """Python regular expression matched against the request's text."""
    check: Literal["none", "luhn", "iban"] = "none"
    """Extra validation of each match: Luhn checksum (card numbers) or ISO 13616 mod-97 (IBANs)."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class PrivacyConfig(_Strict):
    """Sensitive-data rule (docs/security.md): what counts as sensitive and what happens to it."""

    action: Literal["off", "keep_local", "mask"] = "off"
    """keep_local: requests with sensitive data go only to in-house SLMs (never a hosted LLM; 503 if the
    SLM fails); mask: matches are replaced by [NAME] before the request is sent anywhere."""
    detectors: list[Literal["email", "phone", "card", "iban"]] = ["email", "phone", "card", "iban"]
    """Built-in detectors to use."""
    patterns: list[PrivacyPattern] = Field(default_factory=list)
    """Additional patterns."""
    local_backend: str | None = None
    """keep_local: SLM backend for sensitive requests the router did not send to a domain's SLM;
    unset means such requests are refused (503) rather than sent to a hosted LLM."""
    presidio: bool = False
    """Also run Microsoft Presidio's analyzer (install the `privacy` extra)."""
    max_chars: int = Field(200_000, ge=100)
    """Text beyond this many characters is not scanned (keep_local then treats the request as sensitive)."""


class Guardrail(_Strict):
    """A quality floor for one domain's SLM, judged on its most recent audits (docs/quality-audits.md)."""

    min_non_inferior: float = Field(ge=0.0, le=1.0)
    """Required share of audited answers where the SLM was at least as good as the reference LLM (wins
    + ties over wins + ties + losses)."""
    window: int = Field(100, ge=5, le=10_000)
    """How many of the domain's most recent audit verdicts count."""
    min_samples: int = Field(20, ge=5)
    """No action before this many judged verdicts are in the window."""
    action: Literal["alert", "raise_threshold", "shadow"] = "alert"
    """When the floor is missed with confidence (the Wilson 95% upper bound is below it): `alert` (log
    line, metric, report flag), `raise_threshold` (the domain's router threshold goes up by
    `threshold_step`, at most to `max_threshold`), or `shadow` (the LLM serves the domain until an
    operator resets it)."""
    threshold_step: float = Field(0.05, gt=0.0, le=0.5)
    """How much `raise_threshold` adds each time it fires."""
    max_threshold: float = Field(0.99, gt=0.0, le=1.0)
    """Upper bound for `raise_threshold`."""


class AuditConfig(_Strict):
    """Sampled audits: an SLM answer is compared with the reference LLM's answer to the same request by a
    judge model, in the background (docs/quality-audits.md)."""

    sample_rate: float = Field(0.02, ge=0.0, le=1.0)
    """Share of SLM-answered requests audited (per domain unless `domain_rates` says otherwise)."""
    domain_rates: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default_factory=dict)
    """Per-domain sample rates, by domain name."""
    daily_budget_usd: float = Field(5.0, ge=0.0)
    """Most USD spent on reference and judge calls per UTC day (per gateway process, or across replicas
    when `redis_url` is set); audits beyond it are skipped and counted."""
    reference: str | None = None
    """The llm_backends entry that answers the audited request for comparison; default: the first
    fallback LLM."""
    judge: str | None = None
    """The llm_backends entry that judges the two answers; default: the reference."""
    rubrics: dict[str, str] = Field(default_factory=dict)
    """Per-domain judging instructions, replacing the built-in rubric (sql, code, support, math and a
    general one)."""
    store_texts: bool = False
    """Keep the prompt and both answers with each verdict. Off by default: verdicts need no texts."""
    max_in_flight: int = Field(8, ge=1, le=1000)
    """Audits running at once in one process; a sampled request beyond it is skipped and counted."""
    timeout_s: float = Field(120.0, gt=0)
    """Time allowed for one audit (reference call and both judge calls)."""
    shadow: bool = True
    """In router shadow mode, also send sampled requests the router would have given an SLM to that SLM
    (in the background) and judge its answer against the LLM's served one."""
    redis_url: str | None = None
    """Redis shared by all replicas for guardrail windows and actions and the daily spend. Without it, or
    while it is down, each process keeps its own (logged)."""
    key_prefix: str = "slmgw:audit:"
    """Prefix of the Redis keys audits use."""
    guardrails: dict[str, Guardrail] = Field(default_factory=dict)
    """Quality floors by domain name."""


class ReloadConfig(_Strict):
    """How a running gateway picks up a changed policy file (docs/operations.md)."""

    watch_s: float | None = Field(None, gt=0)
    """Check the policy file's modification time this often and reload when it changes; off when unset
    (reload with SIGHUP or `POST /admin/reload`)."""
    redis_url: str | None = None
    """Redis through which a reload on one worker reaches every worker and replica: the reloading worker
    publishes the new version, the others re-read the file within `redis_poll_s`."""
    redis_poll_s: float = Field(1.0, gt=0)
    """How often a worker checks the published version."""
    key: str = "slmgw:policy:version"
    """The Redis key holding the published version."""


class Policy(_Strict):
    version: Literal[1] = 1
    """Policy format version."""
    server: ServerConfig = Field(default_factory=ServerConfig)
    """Listening address and request limits."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    """Client and admin keys."""
    slm_backends: dict[str, SlmBackend] = Field(default_factory=dict)
    """Small models on vLLM, by name; domains refer to these names."""
    llm_backends: dict[str, LlmBackend] = Field(min_length=1)
    """Hosted LLMs reached through litellm, by name; also public model names clients may ask for."""
    domains: list[Domain] = Field(default_factory=list)
    """The in-domain tasks the SLMs serve; each name is a public model name too."""
    router: RouterConfig = Field(default_factory=RouterConfig)
    """How `model: "auto"` requests are classified."""
    fallback: FallbackConfig
    """Where general, low-confidence and failed requests go."""
    embeddings: EmbeddingsConfig | None = None
    """Which backend answers /v1/embeddings for model "auto"."""
    cache: CacheConfig = CacheConfig()
    """Response cache."""
    ledger: LedgerConfig = LedgerConfig()
    """Where each request's record (route, tokens, cost) is written."""
    costs: CostsConfig = CostsConfig()
    """Prices and the savings baseline."""
    limits: LimitsConfig = LimitsConfig()
    """Rate limits, budgets and max_tokens caps per key and tenant."""
    privacy: PrivacyConfig = PrivacyConfig()
    """Sensitive-data detection and where such requests may go."""
    reload: ReloadConfig = ReloadConfig()
    """Hot reload of this file: file watch and the shared version key."""
    audit: AuditConfig | None = None
    """Sampled quality audits of SLM answers against the reference LLM, and quality guardrails; off
    when absent."""
    base_dir: str = Field(".", exclude=True)
    """Directory of the policy file; relative paths in the policy are resolved against it."""

    @model_validator(mode="after")
    def _references(self) -> Policy:
        errors: list[str] = []
        seen: set[str] = set()
        for i, dom in enumerate(self.domains):
            if dom.backend not in self.slm_backends:
                errors.append(f"domains.{i}.backend: unknown SLM backend {dom.backend!r}")
            if dom.name in seen:
                errors.append(f"domains.{i}.name: duplicate domain {dom.name!r}")
            if dom.hard_threshold is not None and not self.router.difficulty_model_path:
                errors.append(f"domains.{i}.hard_threshold: needs router.difficulty_model_path")
            seen.add(dom.name)
        for i, name in enumerate(self.fallback.llm):
            if name not in self.llm_backends:
                errors.append(f"fallback.llm.{i}: unknown LLM backend {name!r}")
        for name in self.llm_backends:
            if name in seen or name == "auto":
                errors.append(f"llm_backends.{name}: name clashes with a domain or 'auto'")
        if self.embeddings and self.embeddings.backend not in {*self.slm_backends, *self.llm_backends}:
            errors.append(f"embeddings.backend: unknown backend {self.embeddings.backend!r}")
        if self.privacy.local_backend and self.privacy.local_backend not in self.slm_backends:
            errors.append(f"privacy.local_backend: unknown SLM backend {self.privacy.local_backend!r}")
        if self.audit is not None:
            for key in ("reference", "judge"):
                name = getattr(self.audit, key)
                if name is not None and name not in self.llm_backends:
                    errors.append(f"audit.{key}: unknown LLM backend {name!r}")
            for where in ("domain_rates", "rubrics", "guardrails"):
                for name in getattr(self.audit, where):
                    if name not in seen:
                        errors.append(f"audit.{where}.{name}: unknown domain {name!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def domain(self, name: str) -> Domain | None:
        return next((d for d in self.domains if d.name == name), None)

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


def interpolate(value: Any, env: Mapping[str, str] | None = None, path: str = "",
                errors: list[str] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string.

    An unset variable without a default is reported in ``errors`` (or raised as PolicyError when no
    list is given) and replaced by an empty string, so validation can go on and report the rest.
    """
    environ = os.environ if env is None else env
    own = errors is None
    errs: list[str] = [] if errors is None else errors
    if isinstance(value, dict):
        out: Any = {k: interpolate(v, environ, f"{path}.{k}" if path else str(k), errs)
                    for k, v in value.items()}
    elif isinstance(value, list):
        out = [interpolate(v, environ, f"{path}.{i}", errs) for i, v in enumerate(value)]
    elif isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if environ.get(name, "") != "":
                return environ[name]
            if default is not None:
                return default
            errs.append(f"{path}: environment variable {name} is not set (or use ${{{name}:-default}})")
            return ""

        out = _ENV_REF.sub(sub, value)
    else:
        out = value
    if own and errs:
        raise PolicyError("<policy>", errs)
    return out


def parse_policy(raw: Any, source: str = "<policy>", base_dir: str = ".",
                 env: Mapping[str, str] | None = None) -> Policy:
    """Validate an already-loaded YAML document; every problem is reported, each with its path."""
    if not isinstance(raw, dict):
        raise PolicyError(source, ["(root): the policy must be a mapping"])
    errors: list[str] = []
    data = interpolate(raw, env, errors=errors)
    try:
        policy = Policy.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        # A field whose env reference was unset is already reported; don't report it twice.
        reported = {e.split(":", 1)[0] for e in errors}
        errors.extend(e for e in _format_errors(exc) if e.split(":", 1)[0] not in reported)
    if errors:
        raise PolicyError(source, errors)
    return policy


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{loc}: {msg}")
    return out


def load_policy(path: str | Path, env: Mapping[str, str] | None = None) -> Policy:
    """Read, interpolate and validate a policy file. Raises PolicyError with every problem found."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(p), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(str(p), [f"not valid YAML: {exc}"]) from None
    return parse_policy(raw, str(p), str(p.resolve().parent), env)
