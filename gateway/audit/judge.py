"""Pairwise judging in the MT-Bench style (Zheng et al., 2023): the judge compares two answers to one
request and ends with ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie). Each pair is judged in both orders; the
verdict counts only when the orders agree, otherwise it is a tie. A failed or unparseable judgement is
an ``error``, never a win."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Pick = Literal["A", "B", "C"]
Verdict = Literal["win", "tie", "loss", "error"]
"""The SLM's result against the reference."""

_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")

SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user request displayed below. Choose the assistant that follows the user's "
    "instructions and answers the request better. {rubric} Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the order in "
    "which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective "
    "as possible. After providing your explanation, output your final verdict by strictly following this "
    'format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)

RUBRICS: Mapping[str, str] = {
    "sql": ("For SQL, judge correctness first: the query must return the same result columns, apply the "
            "same filters, joins, groupings and ordering the request asks for, and be valid for the schema "
            "given; style and formatting do not matter."),
    "code": ("For code, judge correctness first: the code must do what was asked, handle the cases the "
             "request names, and run; then clarity. An explanation without working code is worse than "
             "working code."),
    "support": ("For customer support, judge whether the answer resolves the customer's issue accurately "
                "and safely, follows a sensible policy (no invented refunds, fees or account details), "
                "and is polite and clear."),
    "math": ("For math, judge the final answer first: a wrong final result loses to a right one whatever "
             "the explanation; between two right answers, prefer the clearer correct reasoning."),
}
GENERAL_RUBRIC = "Consider helpfulness, relevance, accuracy, depth and clarity."

USER = ("[User Request]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's "
        "Answer]\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]")


def rubric_for(domain: str, overrides: Mapping[str, str]) -> str:
    return overrides.get(domain) or RUBRICS.get(domain) or GENERAL_RUBRIC


def judge_request(question: str, a: str, b: str, rubric: str) -> dict[str, Any]:
    """The chat request that asks the judge for one order."""
    return {"messages": [{"role": "system", "content": SYSTEM.format(rubric=rubric)},
                         {"role": "user", "content": USER.format(question=question, a=a, b=b)}],
            "temperature": 0, "max_tokens": 1024}


def parse_pick(text: str | None) -> Pick | None:
    """The judge's final verdict: the last ``[[A]]``/``[[B]]``/``[[C]]`` in its answer, else None."""
    if not text:
        return None
    found = _VERDICT.findall(text)
    return found[-1] if found else None  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    order1: Pick | None
    """The pick with the SLM's answer as A."""
    order2: Pick | None
    """The pick with the SLM's answer as B."""
    disagree: bool


def combine(order1: Pick | None, order2: Pick | None) -> Judgement:
    """Both orders into the SLM's verdict: agreement counts, disagreement is a tie, a missing pick is
    an error."""
    if order1 is None or order2 is None:
        return Judgement("error", order1, order2, False)
    first: Verdict = {"A": "win", "B": "loss", "C": "tie"}[order1]  # type: ignore[assignment]
    second: Verdict = {"A": "loss", "B": "win", "C": "tie"}[order2]  # type: ignore[assignment]
    if first == second:
        return Judgement(first, order1, order2, False)
    return Judgement("tie", order1, order2, True)
