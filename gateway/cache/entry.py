"""What one cache entry holds and how it travels as bytes.

An entry keeps the answer in the form it was produced: the assembled completion always, and for an
answer that came from a stream also the original chunk objects in order, so a ``stream: true`` hit
replays exactly what the first client saw (usage chunk included) rather than one aggregated chunk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from gateway.cache.assemble import is_usage_chunk, synthesise_chat_chunks, synthesise_text_chunks
from gateway.cache.keys import EndpointKind

FORMAT_VERSION = 1
SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """Where the stored answer came from; a hit reports it so the ledger can price the saving."""

    route: str = ""
    """Route of the original answer: "slm" or "llm"."""
    domain: str | None = None
    model: str | None = None
    backend: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


_META_FIELDS = frozenset(f.name for f in fields(EntryMeta))


@dataclass(frozen=True, slots=True)
class CacheEntry:
    kind: EndpointKind
    completion: dict[str, Any]
    """The assembled (non-stream) response object."""
    chunks: list[dict[str, Any]] | None = None
    """The original stream chunk objects in order, when the answer was streamed; else None."""
    meta: EntryMeta = field(default_factory=EntryMeta)
    stored_at: float = field(default_factory=time.time)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"v": FORMAT_VERSION, "kind": self.kind, "completion": self.completion,
                             "chunks": self.chunks, "meta": _meta_dict(self.meta),
                             "stored_at": self.stored_at})

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry | None:
        """The entry, or None for bytes this version cannot read (treated as a miss)."""
        try:
            raw = orjson.loads(data)
            if not isinstance(raw, dict) or raw.get("v") != FORMAT_VERSION:
                return None
            meta = raw.get("meta") or {}
            return cls(kind=raw["kind"], completion=raw["completion"], chunks=raw.get("chunks"),
                       meta=EntryMeta(**{k: v for k, v in meta.items() if k in _META_FIELDS}),
                       stored_at=float(raw.get("stored_at", 0.0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def body(self) -> bytes:
        """JSON body of a ``stream: false`` answer."""
        return orjson.dumps(self.completion)

    def stream_chunks(self, include_usage: bool = True) -> list[dict[str, Any]]:
        """Chunk objects for a ``stream: true`` answer: the originals, or synthesised from the
        completion; without the usage chunk when the client did not ask for it."""
        if self.chunks is not None:
            chunks = self.chunks
        elif self.kind == "chat":
            chunks = synthesise_chat_chunks(self.completion)
        else:
            chunks = synthesise_text_chunks(self.completion)
        if include_usage:
            return chunks
        # As the live path does for a client that did not ask for usage: no usage chunk, no field.
        return [{k: v for k, v in c.items() if k != "usage"} if "usage" in c else c
                for c in chunks if not is_usage_chunk(c)]

    def sse(self, include_usage: bool = True) -> Iterator[bytes]:
        """Server-sent events for a ``stream: true`` answer, ``data: [DONE]`` last."""
        for chunk in self.stream_chunks(include_usage):
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield SSE_DONE


def _meta_dict(meta: EntryMeta) -> dict[str, Any]:
    return {k: getattr(meta, k) for k in _META_FIELDS}


def entry_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int]:
    """(prompt_tokens, completion_tokens) from an OpenAI usage object, zeros when absent."""
    if not usage:
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
