"""Exact-match response cache: keys, control, entries, backends (Redis or in-process LRU).

Nothing here speaks HTTP beyond reading a headers mapping; the pipeline wires it in.
"""

from gateway.cache.assemble import (
    assemble_chat,
    assemble_text,
    synthesise_chat_chunks,
    synthesise_text_chunks,
)
from gateway.cache.backend import CacheBackend, CacheStats
from gateway.cache.control import CacheControl, parse_control, without_cache_field
from gateway.cache.entry import CacheEntry, EntryMeta
from gateway.cache.keys import cache_key, canonical_body, is_deterministic
from gateway.cache.memory import MemoryBackend
from gateway.cache.service import (
    CachePlan,
    Lookup,
    Outcome,
    ResponseCache,
    StreamRecorder,
    entry_from_chunks,
    entry_from_completion,
)

__all__ = [
    "CacheBackend", "CacheControl", "CacheEntry", "CachePlan", "CacheStats", "EntryMeta", "Lookup",
    "MemoryBackend", "Outcome", "ResponseCache", "StreamRecorder", "assemble_chat", "assemble_text", "cache_key",
    "canonical_body", "entry_from_chunks", "entry_from_completion", "is_deterministic", "parse_control",
    "synthesise_chat_chunks", "synthesise_text_chunks", "without_cache_field",
]
