"""HTTP routes: translate a request into a pipeline call and back. No logic lives here."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, PayloadTooLarge
from gateway.hardening import check_content_parts, check_json_shape
from gateway.ids import new_id
from gateway.messages import check_messages, path
from gateway.pipeline import Pipeline, RequestContext
from gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from gateway.services import Services
from serving.dispatch import Kind

if TYPE_CHECKING:
    from gateway.limits import Limits

router = APIRouter()


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def read_json(request: Request, services: Services) -> dict[str, Any]:
    """The body as a JSON object; 413 over the size limit, 400 for anything that is not a JSON object."""
    limit = services.policy.server.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is {declared} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object.")
    check_json_shape(body)  # deep nesting / huge value counts -> 400 before anything walks the body
    return body


def _validate(model: type[BaseModel], body: dict[str, Any]) -> None:
    try:
        model.model_validate(body, strict=True)  # "9" is not an int: what is checked is what goes upstream
    except ValidationError as exc:
        err = exc.errors()[0]
        param = path(*err["loc"]) or None
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise InvalidRequest(f"Invalid request: {param}: {err['msg']}{more}", param=param) from None


async def _serve(request: Request, kind: Kind, model: type[BaseModel]) -> Response:
    services: Services = request.app.state.services
    pipeline: Pipeline = request.app.state.pipeline
    request_id = request.headers.get("x-request-id") or f"req_{new_id()}"
    request.state.request_id = request_id
    tenant: str | None = None
    body: dict[str, Any] | None = None
    try:
        caller = services.keys.identify(request.headers)
        tenant = caller.tenant
        body = await read_json(request, services)
        if kind == "chat":
            check_messages(body.get("messages"))  # OpenAI's rules and field paths, before the schema's
        _validate(model, body)
        if kind == "chat" and len(body["messages"]) > services.policy.server.max_messages:
            raise InvalidRequest(f"Too many messages; the limit is {services.policy.server.max_messages}.",
                                 param="messages")
        if kind == "chat":
            check_content_parts(body["messages"])
        ctx = RequestContext(request_id=request_id, tenant=caller.tenant, headers=request.headers,
                             key_id=caller.key_id)
        limits: Limits | None = services.extras.get("limits")
        grant = await limits.admit(caller, kind, body) if limits is not None else None  # 429 / 400
    except GatewayError as exc:
        # Refused before the pipeline: still one ledger row, so every request is accounted for.
        model_name = body.get("model") if isinstance(body, dict) else None
        pipeline.record_rejection(request_id, tenant, kind, model_name, exc)
        raise
    if limits is not None and grant is not None:
        ctx.on_finish = functools.partial(limits.settle, grant)
    response = await pipeline.handle(ctx, kind, body)
    if grant is not None:
        response.headers.update(grant.headers)
    return response


@router.post("/v1/chat/completions", openapi_extra=_schema(ChatCompletionRequest))
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> Response:
    return await _serve(request, "chat", ChatCompletionRequest)


@router.post("/v1/completions", openapi_extra=_schema(CompletionRequest))
@router.post("/completions", include_in_schema=False)
async def completions(request: Request) -> Response:
    return await _serve(request, "completion", CompletionRequest)


@router.post("/v1/embeddings", openapi_extra=_schema(EmbeddingRequest))
@router.post("/embeddings", include_in_schema=False)
async def embeddings(request: Request) -> Response:
    return await _serve(request, "embedding", EmbeddingRequest)


# Served by gateway.asgi.GatewayApp's fast path; the APIRoutes above document them in the OpenAPI schema.
FAST_ROUTES = {"/v1/chat/completions": chat_completions, "/chat/completions": chat_completions,
               "/v1/completions": completions, "/completions": completions,
               "/v1/embeddings": embeddings, "/embeddings": embeddings}


def _model_cards(services: Services) -> list[dict[str, Any]]:
    policy = services.policy
    data: list[dict[str, Any]] = [{"id": "auto", "object": "model", "created": 0, "owned_by": "slm-gateway",
                                   "description": "routed by slm-gateway"}]
    for dom in policy.domains:
        data.append({"id": dom.name, "object": "model", "created": 0, "owned_by": "slm-gateway",
                     "description": dom.description, "route": "slm",
                     "served_model": policy.slm_backends[dom.backend].model})
    for name, llm in policy.llm_backends.items():
        data.append({"id": name, "object": "model", "created": 0, "owned_by": "slm-gateway",
                     "route": "llm", "served_model": llm.model})
    return data


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    services: Services = request.app.state.services
    services.keys.tenant(request.headers)
    return JSONResponse({"object": "list", "data": _model_cards(services)})


@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(request: Request, model_id: str) -> Response:
    services: Services = request.app.state.services
    services.keys.tenant(request.headers)
    for card in _model_cards(services):
        if card["id"] == model_id:
            return JSONResponse(card)
    raise ModelNotFound(f"The model `{model_id}` does not exist. Use 'auto' or one listed by GET /v1/models.",
                        param="model")


@router.get("/health/live")
async def live() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    checks: dict[str, Any] = {}
    for name, component in services.extras.items():
        health = getattr(component, "health", None)
        if callable(health):
            checks[name] = health()
    # A component down (an SLM replica, Redis, the ledger store) degrades the gateway but does not stop
    # it serving: requests escalate, the cache is bypassed, ledger rows wait. So readiness stays 200
    # and says "degraded"; only a gateway that has not finished starting answers 503.
    degraded = sorted(name for name, c in checks.items()
                      if isinstance(c, dict) and (c.get("ok") is False or c.get("status") not in (None, "ok")))
    status = "degraded" if degraded else "ok"
    if not services.keys.is_admin(request.headers):
        return JSONResponse({"status": status})  # replicas, hosts and upstream errors: admin key only
    return JSONResponse({"status": status, "degraded": degraded, "components": checks})
