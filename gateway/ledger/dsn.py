"""Ledger URLs without SQLAlchemy: where the writer's raw driver connects.

Parses the same URLs as ``sqlalchemy.engine.make_url`` (same pattern, same unquoting, so a password
substituted from ``${VAR}`` reads the same here as in reports), for the two stores the ledger supports:
``sqlite[+driver]:///FILE`` (relative to the policy's directory) and ``postgresql[+driver]://...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

# sqlalchemy.engine.url._parse_url's pattern (SQLAlchemy 2.x)
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)
_SQLITE = ("sqlite",)
_POSTGRES = ("postgresql", "postgres")


@dataclass(frozen=True)
class StoreUrl:
    dialect: Literal["sqlite", "postgresql"]
    path: str = ":memory:"
    """SQLite: the database file (absolute), or ``:memory:``."""
    connect: dict[str, Any] = field(default_factory=dict)
    """PostgreSQL: keyword arguments for ``asyncpg.connect`` (the password among them: never log this)."""

    def __repr__(self) -> str:
        where = self.path if self.dialect == "sqlite" else \
            f"{self.connect.get('host', '')}:{self.connect.get('port', '')}/{self.connect.get('database', '')}"
        return f"StoreUrl({self.dialect}, {where})"


def parse_store_url(url: str, base_dir: str | Path = ".") -> StoreUrl:
    """Raises ``ValueError`` for a URL that is neither SQLite nor PostgreSQL."""
    m = _URL.match(url.strip())
    if m is None:
        raise ValueError("cannot parse the ledger URL: use sqlite:///FILE or postgresql://USER@HOST/DB")
    scheme = m["name"].split("+", 1)[0].lower()
    database = unquote(m["database"]) if m["database"] is not None else None
    if scheme in _SQLITE:
        if not database or database == ":memory:":
            return StoreUrl("sqlite")
        path = Path(database).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        return StoreUrl("sqlite", path=str(path.resolve()))
    if scheme not in _POSTGRES:
        raise ValueError(f"unsupported ledger store {scheme!r}: use sqlite:///FILE or postgresql://USER@HOST/DB")
    args: dict[str, Any] = {}
    for key, value in parse_qsl(m["query"] or ""):
        if key in args:
            raise ValueError(f"ledger URL: {key} given twice (several hosts are not supported)")
        args[key] = value
    if "prepared_statement_cache_size" in args:
        args["prepared_statement_cache_size"] = int(args["prepared_statement_cache_size"])
    if isinstance(host_arg := args.get("host"), str) and not host_arg.startswith("/") and ":" in host_arg:
        args["host"], _, port_arg = host_arg.rpartition(":")
        args["port"] = int(port_arg)
    # As SQLAlchemy's asyncpg dialect: the URL's parts, then its query (which wins), empty parts left out.
    parts = {"user": unquote(m["username"] or ""), "password": unquote(m["password"] or ""),
             "host": m["ipv4host"] or m["ipv6host"], "port": int(m["port"]) if m["port"] else None,
             "database": database}
    for key, value in parts.items():
        if value:
            args.setdefault(key, value)
    return StoreUrl("postgresql", connect=args)
