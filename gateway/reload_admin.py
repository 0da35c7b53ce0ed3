"""``POST /admin/reload`` (admin key): reload the policy file now, on this worker, and announce it to
the others. 200 with what changed; 400 with every error (field paths) when the file is invalid, in
which case nothing changed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from gateway.reports.admin import require_admin

router = APIRouter(dependencies=[Depends(require_admin)])


@router.post("/admin/reload")
async def reload_policy(request: Request) -> Response:
    triggers = getattr(request.app.state, "reload", None)
    if triggers is None:
        return JSONResponse({"error": {"message": "The gateway is still starting.", "type": "api_error",
                                       "param": None, "code": "starting"}}, status_code=503)
    result = await triggers.run("admin api")
    body = result.as_dict()
    if result.ok:
        return JSONResponse(body)
    message = "The policy was not reloaded; the running policy stays: " + "; ".join(result.errors[:5])
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": "invalid_policy"}, **body}, status_code=400)
