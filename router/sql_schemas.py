"""Schema-bearing text-to-SQL prompts, the way apps send them: a schema (DDL, a table list or the
``table(columns)`` shorthand) and the user's question, in one of several common prompt layouts.

Schemas come from the data itself: table and column names parsed out of a question's gold SQL
(``tables_from_sql``), KaggleDBQA's table files, or the public Stack Exchange Data Explorer schema
(``sede_schema``, written from its documentation: table and column names only).
"""

from __future__ import annotations

import random
import re

Schema = dict[str, list[str]]

_ALIAS = re.compile(r"\b(\w+)\s+AS\s+(\w+)", re.IGNORECASE)
_COLUMN = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b")
_INTEGER = re.compile(r"(^|_)(id|year|count|number|num|population|area|size|price|score|age|rank|"
                      r"height|length|capacity|credits|views|reputation)($|_)", re.IGNORECASE)
_DATE = re.compile(r"(date|time)", re.IGNORECASE)

LAYOUTS = (
    "{schema}\n\n{q}",
    "{schema}\n-- {q}\nSELECT",
    "Given the following database schema:\n{schema}\n\nQuestion: {q}",
    "### SQLite tables, with their properties:\n#\n{hashed}\n#\n### {q}\nSELECT",
    "You are a SQL expert. Database schema:\n{schema}\nWrite a query to answer: {q}",
    "I have these tables:\n{schema}\n{q}",
    "Schema:\n{schema}\nQuestion: {q}\nSQL:",
    "{q}\n\nTables:\n{schema}",
    "-- Database: {db}\n{schema}\n/* Answer the following: {q} */",
    "Use this schema to write the query.\n\n{schema}\n\nRequest: {q}",
)

# Stack Exchange Data Explorer's main tables (public schema; names only)
SEDE: Schema = {
    "Posts": ["Id", "PostTypeId", "AcceptedAnswerId", "ParentId", "CreationDate", "Score", "ViewCount", "Body",
              "OwnerUserId", "LastActivityDate", "Title", "Tags", "AnswerCount", "CommentCount", "FavoriteCount",
              "ClosedDate"],
    "Users": ["Id", "Reputation", "CreationDate", "DisplayName", "LastAccessDate", "Location", "AboutMe", "Views",
              "UpVotes", "DownVotes"],
    "Comments": ["Id", "PostId", "Score", "Text", "CreationDate", "UserId"],
    "Votes": ["Id", "PostId", "VoteTypeId", "UserId", "CreationDate", "BountyAmount"],
    "Tags": ["Id", "TagName", "Count", "ExcerptPostId", "WikiPostId"],
    "Badges": ["Id", "UserId", "Name", "Date", "Class", "TagBased"],
    "PostTags": ["PostId", "TagId"],
}


def sede_schema() -> Schema:
    return {t: list(c) for t, c in SEDE.items()}


def tables_from_sql(sql: str) -> Schema:
    """Tables and the columns a query uses (``FROM FLIGHT AS FLIGHTalias0 ... FLIGHTalias0.FLIGHT_ID``)."""
    alias = {a: t for t, a in _ALIAS.findall(sql)}
    out: Schema = {t: [] for t in alias.values()}
    for qual, col in _COLUMN.findall(sql):
        table = alias.get(qual, qual if qual in out else None)
        if table is not None and col not in out[table]:
            out[table].append(col)
    return {t: c for t, c in out.items() if c}


def _type(col: str) -> str:
    if _DATE.search(col):
        return "DATE"
    return "INTEGER" if _INTEGER.search(col) else "TEXT"


def render(schema: Schema, style: str, lower: bool) -> str:
    """The schema as ``ddl``, ``short`` (``t(a, b)``), ``list`` (``Table t, columns = [a, b]``) or ``hash``."""
    def name(s: str) -> str:
        return s.lower() if lower else s

    lines = []
    for table, cols in schema.items():
        t, cs = name(table.replace(" ", "_")), [name(c.replace(" ", "_")) for c in cols]
        if style == "ddl":
            body = ",\n".join(f"  {c} {_type(c)}" for c in cs)
            lines.append(f"CREATE TABLE {t} (\n{body}\n);")
        elif style == "short":
            lines.append(f"{t}({', '.join(cs)})")
        elif style == "list":
            lines.append(f"Table {t}, columns = [{', '.join(cs)}]")
        else:
            lines.append(f"# {t}({', '.join(cs)})")
    return "\n".join(lines)


def schema_prompt(question: str, schema: Schema, rng: random.Random) -> str:
    """One schema-bearing prompt for ``question`` (layout, schema style and case drawn from ``rng``)."""
    lower = rng.random() < 0.5
    text = render(schema, rng.choice(("ddl", "ddl", "short", "list")), lower)
    hashed = render(schema, "hash", lower)
    db = next(iter(schema), "db").lower()
    return rng.choice(LAYOUTS).format(schema=text, hashed=hashed, q=question.strip(), db=db)
