"""Counts for the search box: exact when quick, the planner's estimate (flagged) when not."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import Dataset
from sqlalchemy import and_, text

from bulkmail.query_api.search import compile_search, counting, paging
from bulkmail.query_api.search.compiler import CompiledSearch
from bulkmail.query_api.search.counting import count_matches
from bulkmail.query_api.search.paging import page_ids
from bulkmail.shared.db import Database
from bulkmail.shared.models import Lead

# Only PostgreSQL estimates (SQLite, the embedded mode, always counts exactly).
POSTGRES_ONLY = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


async def test_a_quick_count_is_exact(database: Database, dataset: Dataset, backend):
    compiled = compile_search("status:potential", dataset.context("sqlite" if backend == "sqlite" else "postgresql"))
    async with database.session() as session:
        counted = await count_matches(session, compiled)
    assert (counted.value, counted.approximate) == (3, False)


@POSTGRES_ONLY
async def test_a_count_past_its_budget_answers_the_estimate_and_leaves_the_session_usable(
    database: Database, dataset: Dataset
):
    # A filter that sleeps 50 ms per lead stands in for a count over millions of rows: it
    # cannot finish within a 20 ms budget; EXPLAIN does not run it.
    slow = CompiledSearch(
        where=and_(Lead.organization_id == dataset.organization_id, text("(SELECT true FROM pg_sleep(0.05))")),
        order_by=(Lead.id.asc(),),
        limit=None,
    )
    async with database.session() as session:
        await session.execute(text("ANALYZE leads"))
        before = await session.scalar(text("SHOW statement_timeout"))
        counted = await count_matches(session, slow, budget_ms=20)
        assert counted.approximate is True
        # The estimate of "leads of this organisation" (the sleep is a constant to the planner).
        total = await session.scalar(text("SELECT count(*) FROM leads"))
        assert 1 <= counted.value <= total
        # The transaction goes on, with the timeout it had.
        assert await session.scalar(text("SHOW statement_timeout")) == before
        exact = await count_matches(session, compile_search("status:potential", dataset.context("postgresql")))
        assert (exact.value, exact.approximate) == (3, False)


@POSTGRES_ONLY
async def test_limit_caps_the_estimate_too(database: Database, dataset: Dataset):
    slow = CompiledSearch(
        where=and_(Lead.organization_id == dataset.organization_id, text("(SELECT true FROM pg_sleep(0.05))")),
        order_by=(Lead.id.asc(),),
        limit=1,
    )
    async with database.session() as session:
        counted = await count_matches(session, slow, budget_ms=20)
    assert (counted.value, counted.approximate) == (1, True)


async def test_the_lead_list_says_whether_its_total_is_approximate(make_tenant):
    tenant = await make_tenant("Counters")
    for name in ("Acme", "Acme Two", "Globex"):
        assert (await tenant.client.post("/api/v1/lead/", json={"name": name})).status_code == 201
    found = await tenant.client.get("/api/v1/lead/", params={"query": "acme"})
    body = found.json()
    assert (body["total_results"], body["total_results_approximate"]) == (2, False)


@POSTGRES_ONLY
async def test_a_page_is_read_without_parallel_workers_and_the_setting_comes_back(database: Database, dataset: Dataset):
    compiled = compile_search("status:potential sort:name", dataset.context("postgresql"))
    async with database.session() as session:
        await session.execute(text("SET LOCAL max_parallel_workers_per_gather = 3"))
        ids = await page_ids(session, compiled, 0, 2)
        assert [dataset.label_of(i) for i in ids] == ["acme", "globex"]
        assert await session.scalar(text("SHOW max_parallel_workers_per_gather")) == "3"


@POSTGRES_ONLY
async def test_a_large_estimate_answers_without_counting(database: Database, dataset: Dataset, monkeypatch):
    # At a million leads "status:potential" is estimated at 400,000: the estimate answers at once.
    # Here the threshold is lowered below this small dataset's estimate instead.
    monkeypatch.setattr(counting, "EXACT_COUNT_MAX_ESTIMATE", 0)
    compiled = compile_search("status:potential", dataset.context("postgresql"))
    async with database.session() as session:
        await session.execute(text("ANALYZE leads"))
        estimate = await counting.estimate_matches(session, compiled)
        counted = await count_matches(session, compiled)
    assert estimate >= 1
    assert (counted.value, counted.approximate) == (estimate, True)


@POSTGRES_ONLY
@pytest.mark.parametrize("few", [True, False])
async def test_a_page_of_few_related_matches_is_read_from_the_matches(
    database: Database, dataset: Dataset, monkeypatch, few: bool
):
    # This small dataset's estimates are all "few": the threshold decides which way is read.
    monkeypatch.setattr(paging, "MATCHES_FIRST_MAX_ESTIMATE", 10**9 if few else -1)
    compiled = compile_search("phone:415 or title:ceo", dataset.context("postgresql"))
    assert compiled.reads_related
    read: list[str] = []
    real_matches_first = CompiledSearch.page_of_matches

    def spy(self: CompiledSearch, skip: int, limit: int) -> Any:
        read.append("matches first")
        return real_matches_first(self, skip, limit)

    monkeypatch.setattr(CompiledSearch, "page_of_matches", spy)
    async with database.session() as session:
        ids = await page_ids(session, compiled, 0, 10)
    assert read == (["matches first"] if few else [])
    assert sorted(dataset.label_of(i) for i in ids) == ["acme", "umbrella"]


@POSTGRES_ONLY
@pytest.mark.parametrize(
    ("estimate", "table_leads", "collects"),
    [
        (4_200, 1_000_000, True),  # phone:415 at a million leads: 0.4% match, collect them
        (14_000, 100_000, False),  # 14% match: the first page is a walk of ~190 leads
        (3_350, 100_000, False),  # a custom field's word, 3% estimated: still a short walk
        (8_000, 1_000_000, True),  # under the cap and 0.8% of a million: still collected
        (15_000, 1_000_000, False),  # 1.5% of a million: the walk checks ~1,700 leads
        (25_000, 10_000_000, False),  # over the cap: never collected
        (3, 0, True),  # a table never analysed: collect, as before the rule
    ],
)
async def test_matches_are_collected_first_only_where_they_are_rare(
    database: Database, dataset: Dataset, monkeypatch, estimate: int, table_leads: int, collects: bool
):
    async def planner_estimate(*_args: Any, **_kwargs: Any) -> int:
        return estimate

    async def table_rows(_session: Any) -> int:
        return table_leads

    monkeypatch.setattr(paging, "estimate_matches", planner_estimate)
    monkeypatch.setattr(paging, "_table_leads", table_rows)
    compiled = compile_search("phone:415", dataset.context("postgresql"))
    async with database.session() as session:
        assert await paging.reads_matches_first(session, compiled, 0, 26) is collects


def test_only_a_filter_on_related_rows_counts_as_reading_them(dataset: Dataset):
    ctx = dataset.context("postgresql")
    # A slice is estimated at 0.5% of the leads whatever it holds: walking it stays cheap.
    assert not compile_search("sort:created slice:3/10", ctx).reads_related
    assert not compile_search("status:potential calls > 0", ctx).reads_related
    for query in ("phone:415", "not emailed_template:intro", '"custom.Lead Source":web', 'in:"Hot And Called" title:x'):
        assert compile_search(query, ctx).reads_related, query


@POSTGRES_ONLY
async def test_a_custom_text_word_is_estimated_from_the_values(database: Database, dataset: Dataset):
    """`"custom.Lead Source":referral` was estimated at 8 leads for 11,194 (a fixed guess for a
    leading-wildcard pattern), so the API counted exactly and ran out of its
    budget. The words' index (migration 0019_custom_value_words) gives ANALYZE statistics on the
    expression the compiler matches. Checked on the expression alone: the test database holds
    every other test's organisations, whose rows make the planner's independence guesses for the
    organisation and the field (not what is tested here) swing from run to run."""
    org = dataset.organization_id
    word = f"zq{uuid.uuid4().hex[:10]}"  # a word no other row holds
    async with database.session() as session:
        field = await session.scalar(
            text("SELECT id FROM custom_fields WHERE organization_id = :org AND name = 'Lead Source'"), {"org": org}
        )
        await session.execute(
            text(
                "INSERT INTO leads (organization_id, name, description, url, search_text)"
                " SELECT :org, 'Bulk ' || n, '', '', '' FROM generate_series(1, 3000) AS n"
            ),
            {"org": org},
        )
        await session.execute(
            text(
                "INSERT INTO lead_custom_values (lead_id, field_id, organization_id, value_text)"
                " SELECT id, :field, :org, 'From ' || :word"
                " FROM leads WHERE name LIKE 'Bulk %' AND organization_id = :org"
            ),
            {"org": org, "field": field, "word": word},
        )
        await session.execute(text("ANALYZE lead_custom_values"))
        matches = "(' ' || lower(value_text)) LIKE :pattern"
        pattern = {"pattern": f"% {word}%"}
        exact = await session.scalar(text(f"SELECT count(*) FROM lead_custom_values WHERE {matches}"), pattern)
        plan = await session.scalar(
            text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM lead_custom_values WHERE {matches}"), pattern
        )
        rows = await session.scalar(text("SELECT count(*) FROM lead_custom_values"))
        await session.rollback()
    estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    assert exact == 3000
    # Without the expression's statistics: 26 rows for 11,200 at 100,000 leads.
    assert exact / 2 <= estimate <= exact * 2, (estimate, rows)
