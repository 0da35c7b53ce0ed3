"""Training data for the router, built from the public datasets in ``../shared/data``.

The recipe follows that folder's README (labels and traps):

* support: Banking77 train, plus CLINC150's ``banking`` and ``credit_cards`` intents;
* sql: the text-to-SQL questions (ATIS, GeoQuery, Scholar, Advising, WikiSQL) with their placeholders
  filled from ``variables`` (longest names first) and the tokeniser's spaces before punctuation undone,
  sampled per source so WikiSQL does not drown the others;
* code: MBPP task texts; math: GSM8K questions;
* general: CLINC150's other domains and out-of-scope train queries, the self-instruct seed tasks minus
  the ones that are really code, math or SQL (listed below), and MMLU questions by subject with the
  "A. B. C. D. Answer:" layout stripped (mathematics and computer-science subjects left out: they
  are not everyday general traffic and would teach that maths is general).

Every example keeps its source name so splits can be stratified by source.

``recipe="chat"`` (the benchmark's default since the chat-style training set was added) also removes
source-style artefacts that real chat traffic lacks:

* MBPP's "Write a (python) function to ..." opening is replaced, per example, by one of several
  framings ("how do i ... in python?", "python: ...", the bare task, the original, ...), so the router
  cannot learn the opening instead of the task;
* text-to-SQL questions are plain questions about flights, states or courses; asked in a chat box
  without any mention of a database ("what is the capital of texas") they are general questions under
  the labelling rule in docs/router.md. Each one is framed as a request for a query ("sql for: ...",
  "write a query that answers: ...") so that the ``sql`` label means "wants SQL";
* CLINC's ``calculator`` intent ("what is 15 times 3") is arithmetic: labelled ``math``, not general.
"""

from __future__ import annotations

import bz2
import csv
import itertools
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# chat-style code prompts + support/general hard negatives, written for the code round (docs/router.md);
# used by the benchmark (--code) and tune.py (+code configs), not by the demo model
CODE_FILE = REPO / "router" / "examples" / "train_code.jsonl"

# self-instruct seed tasks that are code, math or SQL requests (by id number), dropped from "general"
SELF_INSTRUCT_NOT_GENERAL = {21, 22, 25, 28, 31, 35, 37, 41, 45, 50, 61, 69, 72, 83, 109, 136, 138, 139, 140,
                             141, 144, 158, 164}
MMLU_NOT_GENERAL = {"abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
                    "high_school_statistics", "college_computer_science", "high_school_computer_science",
                    "machine_learning", "econometrics", "formal_logic"}


def data_dir() -> Path:
    """``$SLMGW_DATA_DIR``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("SLMGW_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    source: str


_PUNCT_SPACE = re.compile(r"\s+([?.,!;:')])")


def fill_placeholders(text: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        text = text.replace(name, str(variables[name]))
    text = _PUNCT_SPACE.sub(r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _sample(rng: random.Random, items: list[str], n: int) -> list[str]:
    items = list(dict.fromkeys(t.strip() for t in items if t and t.strip()))
    rng.shuffle(items)
    return items[:n]


def text2sql(root: Path, rng: random.Random, per_source: int) -> list[Example]:
    out: list[Example] = []
    for name in ("atis", "geography", "scholar", "advising", "wikisql"):
        path = root / "text2sql" / (name + (".json.bz2" if name == "wikisql" else ".json"))
        with (bz2.open(path, "rt", encoding="utf-8") if name == "wikisql" else path.open(encoding="utf-8")) as fh:
            entries = json.load(fh)
        texts = [fill_placeholders(s["text"], s.get("variables", {})) for e in entries for s in e["sentences"]]
        out += [Example(t, "sql", "text2sql/" + name) for t in _sample(rng, texts, per_source)]
    return out


_MBPP_OPENING = re.compile(r"^write an? (?:python )?function (?:to|that|which) ", re.IGNORECASE)
CODE_FRAMES = ("{x}", "how do i {x} in python?", "python: {x}", "can you write code to {x}",
               "i need a function to {x}", "Write a function to {x}", "Write a python function to {x}",
               "write me a quick script to {x}", "whats the cleanest way to {x}?")
SQL_FRAMES = ("sql for: {x}", "write a query that answers: {x}", "need the sql query: {x}",
              "from our database, {x} (need the query)", "how do i write this in sql? {x}",
              "sql question - {x}", "can you give me the query for this: {x}", "query to get: {x}")


def frame_code(text: str, rng: random.Random) -> str:
    """An MBPP task with its "Write a (python) function to" opening replaced by a random framing."""
    m = _MBPP_OPENING.match(text)
    if not m:
        return text
    rest = text[m.end():].rstrip(".").strip()
    return rng.choice(CODE_FRAMES).format(x=rest)


def frame_sql(text: str, rng: random.Random) -> str:
    """A text-to-SQL question framed as a request for a query."""
    q = text.strip()
    q = q[:1].lower() + q[1:] if q[:2].isalpha() and not q[:2].isupper() else q
    return rng.choice(SQL_FRAMES).format(x=q)


def mmlu(root: Path, rng: random.Random, n: int) -> list[Example]:
    texts: list[str] = []
    for path in sorted((root / "routellm" / "mmlu_responses").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        if subject in MMLU_NOT_GENERAL:
            continue
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                texts.append(strip_mmlu(row["prompt"]))
    return [Example(t, "general", "mmlu") for t in _sample(rng, texts, n)]


def strip_mmlu(prompt: str) -> str:
    """The question alone: drop the lettered options and the trailing "Answer:"."""
    lines = prompt.strip().splitlines()
    while lines and (lines[-1].strip() == "Answer:" or re.match(r"^[A-D]\. ", lines[-1])):
        lines.pop()
    return "\n".join(lines).strip()


def clinc(root: Path) -> tuple[dict[str, list[list[str]]], dict[str, str]]:
    """CLINC150 train/val/oos splits and intent -> domain map."""
    data = json.loads((root / "clinc150" / "clinc150_trainval.json").read_text(encoding="utf-8"))
    domains = json.loads((root / "clinc150" / "domains.json").read_text(encoding="utf-8"))
    intent_domain = {intent: dom for dom, intents in domains.items() for intent in intents}
    return data, intent_domain


RECIPES = ("plain", "chat")


def build(root: Path | None = None, seed: int = 0, scale: float = 1.0, recipe: str = "plain") -> list[Example]:
    """The labelled training pool (about 16k examples at ``scale=1``; smaller scales for quick tests).
    ``recipe`` is ``plain`` (the sources as they are, after the README's fixes) or ``chat`` (also the
    artefact removal described in the module docstring)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r} (choose from {', '.join(RECIPES)})")
    chat = recipe == "chat"
    root = root or data_dir()
    rng = random.Random(seed)

    def k(n: int) -> int:
        return max(20, int(n * scale))

    ex: list[Example] = []
    with (root / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        b77 = [r["text"] for r in csv.DictReader(fh)]
    ex += [Example(t, "support", "banking77") for t in _sample(rng, b77, k(3000))]
    data, intent_domain = clinc(root)
    support = [t for t, i in data["train"] if intent_domain.get(i) in ("banking", "credit_cards")]
    other = [t for t, i in data["train"] if intent_domain.get(i) not in ("banking", "credit_cards")
             and not (chat and i == "calculator")]
    if chat:
        calc = [t for t, i in data["train"] if i == "calculator"]
        ex += [Example(t, "math", "clinc/calculator") for t in _sample(rng, calc, k(100))]
    ex += [Example(t, "support", "clinc/banking") for t in _sample(rng, support, k(1000))]
    ex += [Example(t, "general", "clinc/other") for t in _sample(rng, other, k(2500))]
    ex += [Example(t, "general", "clinc/oos") for t in _sample(rng, [t for t, _ in data["oos_train"]], k(100))]
    sql = text2sql(root, rng, k(800))
    ex += [Example(frame_sql(e.text, rng), e.label, e.source) for e in sql] if chat else sql
    with (root / "mbpp" / "mbpp_train.jsonl").open(encoding="utf-8") as fh:
        mbpp = [json.loads(line)["text"] for line in fh if line.strip()]
    ex += [Example(frame_code(t, rng) if chat else t, "code", "mbpp") for t in _sample(rng, mbpp, k(1000))]
    with (root / "gsm8k" / "train.jsonl").open(encoding="utf-8") as fh:
        gsm = [json.loads(line)["question"] for line in fh if line.strip()]
    ex += [Example(t, "math", "gsm8k") for t in _sample(rng, gsm, k(2500))]
    seeds: list[str] = []
    with (root / "self_instruct" / "data__seed_tasks.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if int(d["id"].rsplit("_", 1)[1]) in SELF_INSTRUCT_NOT_GENERAL:
                continue
            inp = (d.get("instances") or [{}])[0].get("input", "")
            seeds.append(d["instruction"] + ("\n" + inp if inp else ""))
    ex += [Example(t, "general", "self_instruct") for t in _sample(rng, seeds, k(200))]
    ex += mmlu(root, rng, k(2500))
    return ex


def split(examples: list[Example], fractions: tuple[float, ...], seed: int = 0) -> list[list[Example]]:
    """Split stratified by source (each source is cut in the same proportions)."""
    rng = random.Random(seed)
    by_source: dict[str, list[Example]] = {}
    for e in examples:
        by_source.setdefault(e.source, []).append(e)
    parts: list[list[Example]] = [[] for _ in fractions]
    for items in by_source.values():
        items = items[:]
        rng.shuffle(items)
        start = 0
        for i, f in enumerate(fractions):
            end = len(items) if i == len(fractions) - 1 else start + round(f * len(items))
            parts[i].extend(items[start:end])
            start = end
    return parts


def read_labelled(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(r["text"], r["label"], path.name) for r in rows]


def split_by_label(examples: list[Example], first: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Two parts, each label cut in the same proportion (``first`` of it in the first part)."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    a: list[Example] = []
    b: list[Example] = []
    for _, items in sorted(by_label.items()):
        items = items[:]
        rng.shuffle(items)
        k = round(first * len(items))
        a += items[:k]
        b += items[k:]
    return a, b


_TOKEN = re.compile(r"[a-z0-9]+")


def _shingles(text: str) -> set[str]:
    words = _TOKEN.findall(text.lower())
    return set(words) | {a + " " + b for a, b in itertools.pairwise(words)}


def near_duplicates(examples: list[Example], training: list[Example], jaccard: float = 0.5) -> set[int]:
    """Indices of ``examples`` whose words + word pairs overlap some training text's by at least
    ``jaccard`` (for reporting an evaluation set with and without prompts the training data nearly
    contains)."""
    train_sh = [_shingles(e.text) for e in training]
    index: dict[str, list[int]] = {}
    for j, sh in enumerate(train_sh):
        for g in sh:
            index.setdefault(g, []).append(j)
    out: set[int] = set()
    for i, e in enumerate(examples):
        sh = _shingles(e.text)
        if not sh:
            continue
        shared: dict[int, int] = {}
        for g in sh:
            for j in index.get(g, ()):
                shared[j] = shared.get(j, 0) + 1
        if any(n / len(sh | train_sh[j]) >= jaccard for j, n in shared.items()):
            out.add(i)
    return out
