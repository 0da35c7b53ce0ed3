"""The public corpora reader (router.corpora) and schema-bearing SQL prompts (router.sql_schemas)."""

from __future__ import annotations

import random

import pytest

from router import corpora, starter
from router.sql_schemas import schema_prompt, tables_from_sql

DATA = starter.data_dir()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"public data not found at {DATA} (set SLMGW_DATA_DIR)")


def test_tables_and_columns_come_from_the_gold_sql() -> None:
    sql = ('SELECT DISTINCT FLIGHTalias0.FLIGHT_ID FROM AIRPORT AS AIRPORTalias0 , FLIGHT AS FLIGHTalias0 '
           'WHERE AIRPORTalias0.AIRPORT_CODE = "x" AND FLIGHTalias0.TO_AIRPORT = AIRPORTalias0.AIRPORT_CODE ;')
    assert tables_from_sql(sql) == {"AIRPORT": ["AIRPORT_CODE"], "FLIGHT": ["FLIGHT_ID", "TO_AIRPORT"]}


def test_schema_prompt_carries_question_and_schema_in_varied_layouts() -> None:
    rng = random.Random(0)
    schema = {"orders": ["order_id", "customer_id", "order_date"], "customers": ["customer_id", "name"]}
    prompts = {schema_prompt("How many orders per customer?", schema, rng) for _ in range(40)}
    assert len(prompts) > 10
    for p in prompts:
        assert "How many orders per customer?" in p
        assert "customer_id" in p.lower() and "orders" in p.lower()
    assert any("CREATE TABLE" in p for p in prompts) and any("order_date DATE" in p or "order_date date" in p.lower()
                                                             for p in prompts)


@needs_data
def test_training_pool_has_no_non_commercial_corpus_and_labels_by_fields() -> None:
    pool = corpora.load(DATA, cap=200)
    assert not any(e.nc for e in pool)
    names = {e.source for e in pool}
    assert not names & {"asdiv", "codealpaca_2k", "instruction_wild"}
    assert {"bitext", "hint3", "staqc_sql", "sede", "kaggledbqa", "conala", "gsm8k", "nq_open+webquestions"} <= names
    by = {(e.source, e.label) for e in pool}
    assert ("clinc_calculator+hwu_maths", "math") in by and ("hwu64", "general") in by
    assert all(e.label == "sql" for e in pool if e.source in ("staqc_sql", "sede", "kaggledbqa", "text2sql"))
    sql = [e.text for e in pool if e.label == "sql"]
    assert sum("CREATE TABLE" in t.upper() or "columns = [" in t for t in sql) > 50  # schema-bearing prompts
    evaluation = corpora.load(DATA, cap=200, include_nc=True)
    assert {e.source for e in evaluation if e.nc} == {"asdiv", "codealpaca_2k", "instruction_wild"}


@needs_data
def test_loading_is_deterministic_and_capped() -> None:
    a, b = corpora.load(DATA, cap=50), corpora.load(DATA, cap=50)
    assert [e.text for e in a] == [e.text for e in b]
    counts: dict[tuple[str, str], int] = {}
    for e in a:
        counts[(e.source, e.label)] = counts.get((e.source, e.label), 0) + 1
    # kaggledbqa adds two schema variants per question; every other source stays within the cap
    assert all(n <= 50 for (s, _), n in counts.items() if s not in ("kaggledbqa", "clinc_calculator+hwu_maths"))
