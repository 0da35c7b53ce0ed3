"""Audit verdicts as training labels for the difficulty model (``slmgw quality export-audits``).

One JSONL record per judged audit whose request text is known: ``{"text", "slm_score", "llm_score",
"domain", "verdict", "request_id", "ts"}`` with the SLM's result as scores (win 1/0, loss 0/1, tie 1/1),
the same format ``slmgw quality train`` reads. The text is the request's latest user turn, as the
difficulty model reads it: from the audit row (``audit.store_texts``) or else the ledger row of the same
request (``ledger.store_prompts``). Errors and audits without text are counted, not exported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

SCORES = {"win": (1.0, 0.0), "loss": (0.0, 1.0), "tie": (1.0, 1.0)}


def _text(stored: str | None) -> str | None:
    if not stored:
        return None
    from router.difficulty import request_text

    try:
        messages = json.loads(stored)
    except json.JSONDecodeError:
        return stored
    if isinstance(messages, list):
        return request_text({"messages": messages}) or None
    return stored


async def export_audits(engine: AsyncEngine, since: datetime, until: datetime, domain: str | None,
                        counts: dict[str, int]) -> list[dict[str, Any]]:
    from gateway.audit.schema import audits
    from gateway.ledger.schema import requests

    a, r = audits.c, requests.c
    query = (sa.select(a.request_id, a.ts, a.domain, a.verdict, a.prompt_text, r.prompt_text.label("ledger_text"))
             .select_from(audits.outerjoin(requests, r.request_id == a.request_id))
             .where(a.ts >= since, a.ts < until).order_by(a.ts))
    if domain is not None:
        query = query.where(a.domain == domain)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    async with engine.connect() as conn:
        for row in (await conn.execute(query)).all():
            if row.request_id in seen:  # a request with several ledger rows (none expected) counts once
                continue
            seen.add(row.request_id)
            if row.verdict not in SCORES:
                counts["errors"] = counts.get("errors", 0) + 1
                continue
            text = _text(row.prompt_text) or _text(row.ledger_text)
            if text is None:
                counts["no_text"] = counts.get("no_text", 0) + 1
                continue
            slm, llm = SCORES[row.verdict]
            out.append({"text": text, "slm_score": slm, "llm_score": llm, "domain": row.domain,
                        "verdict": row.verdict, "request_id": row.request_id, "ts": str(row.ts)})
            counts["exported"] = counts.get("exported", 0) + 1
    return out


def jsonl(records: list[dict[str, Any]]) -> Iterator[str]:
    for rec in records:
        yield json.dumps(rec, ensure_ascii=False)
