"""Labelled prompts from the public corpora in ``../shared/data`` (read in place, never copied).

Each corpus is labelled by its own fields where the folder is not the label (the data README's traps):
HINT3's out-of-scope label is dropped, HWU64's ``qa_maths`` is math, TheoremQA keeps only field Math,
awesome-chatgpt-prompts' ``for_devs`` prompts (a mix of code, SQL and general) are dropped, CLINC's
banking/credit-card intents are support and ``calculator`` is math. Every example names its
``source``: the unit a leave-one-source-out evaluation holds out. Near-duplicate corpora share one
source (Banking77 with CLINC's banking intents; SVAMP with MAWPS; NQ-open with WebQuestions), so
holding a source out really removes its style.

``nc`` marks corpora under a non-commercial licence: usable for evaluation, never in a shipped model
(``load(..., include_nc=False)``, the default).

Text-to-SQL apps send the schema with the question, so ``router.sql_schemas`` turns some SQL questions
into schema-bearing prompts; those stay in the source of the question they were built from.
"""

from __future__ import annotations

import bz2
import csv
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.sql_schemas import schema_prompt, sede_schema, tables_from_sql

# self-instruct seed tasks that are code, math or SQL requests (by id number), dropped from "general"
SELF_INSTRUCT_NOT_GENERAL = frozenset({21, 22, 25, 28, 31, 35, 37, 41, 45, 50, 61, 69, 72, 83, 109, 136, 138, 139,
                                       140, 141, 144, 158, 164})
MMLU_NOT_GENERAL = frozenset({"abstract_algebra", "college_mathematics", "elementary_mathematics",
                              "high_school_mathematics", "high_school_statistics", "college_computer_science",
                              "high_school_computer_science", "machine_learning", "econometrics", "formal_logic"})
CODE_FRAMES = ("{x}", "how do i {x} in python?", "python: {x}", "can you write code to {x}",
               "i need a function to {x}", "Write a function to {x}", "Write a python function to {x}",
               "write me a quick script to {x}", "whats the cleanest way to {x}?")
SQL_FRAMES = ("sql for: {x}", "write a query that answers: {x}", "need the sql query: {x}",
              "from our database, {x} (need the query)", "how do i write this in sql? {x}",
              "sql question - {x}", "can you give me the query for this: {x}", "query to get: {x}")
_MBPP_OPENING = re.compile(r"^write an? (?:python )?function (?:to|that|which) ", re.IGNORECASE)
_PUNCT_SPACE = re.compile(r"\s+([?.,!;:')])")
SCHEMA_SHARE = 0.6  # share of a schema-capable SQL source's questions that get a schema in the prompt


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    source: str
    """The unit held out together (a corpus, or near-duplicate corpora)."""
    nc: bool = False
    """Non-commercial licence: evaluation only."""


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _sample(rng: random.Random, items: list[str], n: int) -> list[str]:
    items = list(dict.fromkeys(t.strip() for t in items if isinstance(t, str) and t.strip()))
    rng.shuffle(items)
    return items[:n]


def fill_placeholders(text: str, variables: dict[str, str]) -> str:
    """A tokenised text-to-SQL question with its placeholders filled (longest names first) and the
    tokeniser's space before punctuation undone."""
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(name, str(variables[name]))
    return re.sub(r"\s+", " ", _PUNCT_SPACE.sub(r"\1", text)).strip()


def frame_sql(text: str, rng: random.Random) -> str:
    q = text.strip()
    q = q[:1].lower() + q[1:] if q[:2].isalpha() and not q[:2].isupper() else q
    return rng.choice(SQL_FRAMES).format(x=q)


def frame_code(text: str, rng: random.Random) -> str:
    m = _MBPP_OPENING.match(text)
    if not m:
        return text
    return rng.choice(CODE_FRAMES).format(x=text[m.end():].rstrip(".").strip())


def strip_mmlu(prompt: str) -> str:
    lines = prompt.strip().splitlines()
    while lines and (lines[-1].strip() == "Answer:" or re.match(r"^[A-D]\. ", lines[-1])):
        lines.pop()
    return "\n".join(lines).strip()


class _Pool:
    def __init__(self, root: Path, rng: random.Random, cap: int) -> None:
        self.root, self.rng, self.cap = root, rng, cap
        self.out: list[Example] = []

    def add(self, texts: list[str], label: str, source: str, nc: bool = False, cap: int | None = None) -> None:
        self.out += [Example(t, label, source, nc) for t in _sample(self.rng, texts, cap or self.cap)]

    def add_sql(self, questions: list[tuple[str, dict[str, list[str]]]], source: str, frame: bool,
                extra_schema: int = 0) -> None:
        """SQL questions: a share with their schema in the prompt, the rest bare or framed; with
        ``extra_schema`` each question also appears that many more times with a schema (small sources)."""
        items = list({q: (q, s) for q, s in questions if q}.values())
        self.rng.shuffle(items)
        for q, tables in items[: self.cap]:
            if tables and self.rng.random() < SCHEMA_SHARE:
                text = schema_prompt(q, tables, self.rng)
            else:
                text = frame_sql(q, self.rng) if frame else q
            self.out.append(Example(text, "sql", source))
            self.out += [Example(schema_prompt(q, tables, self.rng), "sql", source)
                         for _ in range(extra_schema if tables else 0)]


def _support(p: _Pool) -> None:
    with (p.root / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        b77 = [r["text"] for r in csv.DictReader(fh)]
    data = json.loads((p.root / "clinc150" / "clinc150_trainval.json").read_text(encoding="utf-8"))
    domains = json.loads((p.root / "clinc150" / "domains.json").read_text(encoding="utf-8"))
    dom = {i: d for d, intents in domains.items() for i in intents}
    rows = data["train"] + data["val"]
    bank = [t for t, i in rows if dom.get(i) in ("banking", "credit_cards")]
    p.add(b77 + bank, "support", "banking77+clinc_banking")
    p.add([r["text"] for r in _jsonl(p.root / "bitext_customer_service" / "bitext_customer_service.jsonl")],
          "support", "bitext")
    p.add([r["text"] for r in _jsonl(p.root / "hint3" / "hint3_v2.jsonl") if r["label"] != "NO_NODES_DETECTED"],
          "support", "hint3")
    p.add([t for t, i in rows if i == "calculator"], "math", "clinc_calculator+hwu_maths")
    p.add([t for t, i in rows if dom.get(i) not in ("banking", "credit_cards") and i != "calculator"]
          + [t for t, _ in data["oos_train"] + data["oos_val"]], "general", "clinc")


def _sql(p: _Pool) -> None:
    t2s: list[tuple[str, dict[str, list[str]]]] = []
    per = max(1, p.cap // 5)
    for name in ("atis", "geography", "scholar", "advising", "wikisql"):
        path = p.root / "text2sql" / (name + (".json.bz2" if name == "wikisql" else ".json"))
        opener = bz2.open(path, "rt", encoding="utf-8") if name == "wikisql" else path.open(encoding="utf-8")
        with opener as fh:
            entries = json.load(fh)
        p.rng.shuffle(entries)
        qs = []
        for e in entries[: per * 3]:
            tables = {} if name == "wikisql" else tables_from_sql(e["sql"][0])
            qs += [(fill_placeholders(s["text"], s.get("variables", {})), tables) for s in e["sentences"][:1]]
        t2s += qs[:per]
    p.add_sql(t2s, "text2sql", frame=True)
    p.add([r["title"] for r in _jsonl(p.root / "staqc_sql" / "staqc_sql_titles.jsonl")], "sql", "staqc_sql")
    sede = sede_schema()
    p.add_sql([((r["title"] + (". " + r["description"].strip() if r.get("description") else "")).strip(), sede)
               for r in _jsonl(p.root / "sede" / "sede_val_test.jsonl")], "sede", frame=False)
    tables = json.loads((p.root / "kaggledbqa" / "KaggleDBQA_tables.json").read_text(encoding="utf-8"))
    schemas = {}
    for db in tables:
        cols: dict[str, list[str]] = {t: [] for t in db["table_names_original"]}
        for ti, col in db["column_names_original"]:
            if ti >= 0:
                cols[db["table_names_original"][ti]].append(col)
        schemas[db["db_id"]] = cols
    kq = [(r["question"], schemas.get(r["db_id"], {})) for r in _jsonl(p.root / "kaggledbqa" / "kaggledbqa.jsonl")]
    p.add_sql(kq, "kaggledbqa", frame=False, extra_schema=2)  # 272 questions, so more schema layouts each


def _code_math(p: _Pool, include_nc: bool) -> None:
    mbpp = [r["text"] for r in _jsonl(p.root / "mbpp" / "mbpp_train.jsonl")]
    p.add([frame_code(t, p.rng) for t in mbpp], "code", "mbpp")
    p.add([r.get("rewritten_intent") or r["intent"] for r in _jsonl(p.root / "conala" / "conala_train.jsonl")],
          "code", "conala")
    p.add([r["text"] for r in _jsonl(p.root / "cs1qa" / "cs1qa_questions.jsonl")], "code", "cs1qa")
    p.add([r["question"] for r in _jsonl(p.root / "gsm8k" / "train.jsonl")], "math", "gsm8k")
    p.add([r["question"] for r in _jsonl(p.root / "svamp" / "svamp.jsonl")]
          + [r["question"] for r in _jsonl(p.root / "mawps" / "mawps.jsonl")], "math", "svamp+mawps")
    aqua = _jsonl(p.root / "aqua_rat" / "aqua_rat_dev_test.jsonl")
    p.add([r["question"] + "\n" + " ".join(r["options"]) for r in aqua], "math", "aqua_rat")
    p.add([r["question"] for r in _jsonl(p.root / "theoremqa" / "theoremqa.jsonl") if r["field"] == "Math"],
          "math", "theoremqa")
    if include_nc:
        p.add([r["question"] for r in _jsonl(p.root / "asdiv" / "asdiv.jsonl")], "math", "asdiv", nc=True)
        ca = list(_jsonl(p.root / "codealpaca_2k" / "code_alpaca_2k.jsonl"))
        sqlish = re.compile(r"\b(sql|query|table|database|select)\b", re.IGNORECASE)
        p.add([r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in ca
               if not sqlish.search(r["instruction"])], "code", "codealpaca_2k", nc=True)


def _general(p: _Pool, include_nc: bool) -> None:
    hwu = list(_jsonl(p.root / "hwu64" / "hwu64.jsonl"))
    p.add([r["text"] for r in hwu if r["intent"] != "qa_maths"], "general", "hwu64")
    p.add([r["text"] for r in hwu if r["intent"] == "qa_maths"], "math", "clinc_calculator+hwu_maths")
    seeds = []
    for d in _jsonl(p.root / "self_instruct" / "data__seed_tasks.jsonl"):
        if int(d["id"].rsplit("_", 1)[1]) not in SELF_INSTRUCT_NOT_GENERAL:
            inp = (d.get("instances") or [{}])[0].get("input", "")
            seeds.append(d["instruction"] + ("\n" + inp if inp else ""))
    p.add(seeds, "general", "self_instruct")
    mmlu = []
    for path in sorted((p.root / "routellm" / "mmlu_responses").glob("mmlu_*.csv")):
        if path.stem.removeprefix("mmlu_") not in MMLU_NOT_GENERAL:
            with path.open(encoding="utf-8", newline="") as fh:
                mmlu += [strip_mmlu(r["prompt"]) for r in csv.DictReader(fh)]
    p.add(mmlu, "general", "mmlu")
    p.add([r["prompt"] for r in _jsonl(p.root / "awesome_chatgpt_prompts" / "prompts.jsonl") if not r.get("for_devs")],
          "general", "awesome_chatgpt_prompts")
    p.add([r["prompt"] for r in _jsonl(p.root / "hh_rlhf_harmless" / "harmless_base_test_first_turns.jsonl")],
          "general", "hh_rlhf_harmless")
    p.add([r["question"] for r in _jsonl(p.root / "truthfulqa" / "truthfulqa.jsonl")], "general", "truthfulqa")
    p.add([r["question"] for r in _jsonl(p.root / "nq_open" / "nq_open_questions.jsonl")]
          + [r["question"] for r in _jsonl(p.root / "webquestions" / "webquestions_train.jsonl")],
          "general", "nq_open+webquestions")
    # xstest: homonyms like "How do I kill a Python process?" are code requests; leave those out
    techy = re.compile(r"\b(python|c program|linux|process|thread|sql|java|script|code|server)\b", re.IGNORECASE)
    p.add([r["prompt"] for r in _jsonl(p.root / "xstest" / "xstest_prompts.jsonl") if not techy.search(r["prompt"])],
          "general", "xstest")
    roleplay = _jsonl(p.root / "gpteacher_roleplay" / "gpteacher_roleplay.jsonl")
    p.add([r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in roleplay],
          "general", "gpteacher_roleplay")
    if include_nc:
        p.add([r["instruction"] for r in _jsonl(p.root / "instruction_wild" / "instruction_wild_v2_user.jsonl")
               if not techy.search(r["instruction"]) and not re.search(r"\d", r["instruction"])],
              "general", "instruction_wild", nc=True)


def load(root: Path, cap: int = 1500, seed: int = 0, include_nc: bool = False) -> list[Example]:
    """Every usable corpus under ``root``, at most ``cap`` examples per source (deterministic)."""
    p = _Pool(root, random.Random(seed), cap)
    _support(p)
    _sql(p)
    _code_math(p, include_nc)
    _general(p, include_nc)
    return p.out
