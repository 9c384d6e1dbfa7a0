"""A page of a search's lead ids, read the way a first page should be read.

A page is a LIMIT over an ordered walk (newest leads first) that checks each lead until enough
match. That is right when matches are common, and ruinous when they are rare: `phone:415`
matches 0.4% of a million leads, and the walk checked 25,000 leads' phones for its first 101
(150-460 ms), where collecting the 4,200 matches and ordering them takes a few ms. PostgreSQL
makes that choice from its estimate and chose the walk even when the estimate was right (its
cost model takes a check per lead as nearly free). So the planner's estimate is read first
(planning only, as for the count), and a query that checks related rows and is estimated at
no more than ``MATCHES_FIRST_MAX_ESTIMATE`` leads has its page read from its matches. (Only
such a query: a check on the lead's own columns is cheap enough to walk, and the planner's
estimate of some of them is a guess: `slice:3/10` is estimated at 0.5% of the leads.)

PostgreSQL may plan a walk in parallel, and then every worker walks and checks on its own
until the leader has its rows: measured at 1,000,000 leads, two workers checked three times the
leads a single process did and answered later (`phone:415`: 47,000 checks and 1.1 s against
26,000 and 0.9 s; `location:"san francisco"`: 280 ms against 150 ms). So a page is read
without parallel workers; the setting is restored for the rest of the transaction (the count
that follows may well use them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.search.compiler import CompiledSearch
from bulkmail.query_api.search.counting import MatchCount, count_from_page, count_matches, estimate_matches

# At most this many estimated matches: collect them, then order (sorting 20,000 ids is ~10 ms).
MATCHES_FIRST_MAX_ESTIMATE = 20_000
# A walk's check of one lead (an index probe into related rows) against collecting one match in
# bulk, the lower of two measurements: `phone: 415` at 1,000,000 leads walked 25,000 leads in
# 641 ms and collected its 4,200 matches in a few ms (25x); `"custom.Lead Source":referral` at
# 100,000 collects 11,000 matches through the trigram index at ~7 us each, and a walk checks a
# lead's custom values at ~20 us (3x).
WALK_CHECK_COST = 3
TABLE_ROWS_TTL_S = 60.0

_SERIAL = text(
    "SELECT current_setting('max_parallel_workers_per_gather')"
    " || left(set_config('max_parallel_workers_per_gather', '0', true), 0)"
)
_SERIAL_REST = text("SELECT set_config('max_parallel_workers_per_gather', '0', true)")
_RESTORE = text("SELECT set_config('max_parallel_workers_per_gather', :value, true)")


async def reads_matches_first(session: AsyncSession, compiled: CompiledSearch, skip: int = 0, limit: int = 26) -> bool:
    """Whether pages of ``compiled`` are read from its matches (PostgreSQL, few related matches).

    Collecting E matches costs about E; walking to a page costs about (skip + limit) x N / E
    leads checked (N leads in all), each check a probe of related rows that costs
    ``WALK_CHECK_COST`` collected matches. So the matches go first only where they are rare:
    E x E < (skip + limit) x N x ``WALK_CHECK_COST``. At 1,000,000 leads a 25-lead page
    collects a search estimated under 8,800 (a 101-id page: under 17,400), and walks past it at
    most 3,000 leads. At 100,000, `"custom.Lead Source":referral` (11% of the leads, estimated
    3,350) walks ~240 leads for its first page instead of collecting and ordering 11,000 (150 ms
    under load). N is the whole table's rows (every organisation's), an upper bound that errs
    toward collecting.
    """
    if session.get_bind().dialect.name != "postgresql" or not compiled.reads_related:
        return False
    # Uncapped: `sort:created limit:10` still has a million leads to collect before ordering.
    estimate = await estimate_matches(session, compiled, capped=False)
    if estimate > MATCHES_FIRST_MAX_ESTIMATE:
        return False
    table_leads = await _table_leads(session)
    if table_leads <= 0:  # never analysed: no size to weigh the walk by
        return True
    return estimate * estimate <= (skip + limit) * table_leads * WALK_CHECK_COST


_LEADS_ROWS = text("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'leads'::regclass")
_table_rows: tuple[float, int] | None = None  # (read at, rows): the statistics move slowly


async def _table_leads(session: AsyncSession) -> int:
    global _table_rows
    now = time.monotonic()
    if _table_rows is None or now - _table_rows[0] > TABLE_ROWS_TTL_S:
        _table_rows = (now, int(await session.scalar(_LEADS_ROWS) or 0))
    return _table_rows[1]


async def page_statement(session: AsyncSession, compiled: CompiledSearch, skip: int, limit: int) -> Select[Any]:
    """The statement ``page_ids`` reads: a walk, or the matches first (PostgreSQL, few related matches)."""
    if await reads_matches_first(session, compiled, skip, limit):
        return compiled.page_of_matches(skip, limit)
    return compiled.page(skip, limit)


async def page_ids(session: AsyncSession, compiled: CompiledSearch, skip: int, limit: int) -> list[int]:
    """Lead ids ``skip`` to ``skip + limit`` in the query's order (ask one more to learn has_more)."""
    statement = await page_statement(session, compiled, skip, limit)
    if session.get_bind().dialect.name != "postgresql":
        return list((await session.scalars(statement)).all())
    previous = await session.scalar(_SERIAL)
    ids = list((await session.scalars(statement)).all())
    # (Not in a finally: after an error the transaction is aborted, and the setting with it.)
    await session.execute(_RESTORE, {"value": previous})
    return ids


@dataclass(frozen=True, slots=True)
class KnownSearch:
    """What an earlier page of the same search found out (kept a few seconds, ``query_api.recent``)."""

    total: MatchCount
    matches_first: bool  # its pages are read from the matches


@dataclass(frozen=True, slots=True)
class SearchPage:
    ids: list[int]  # at most the page's limit
    has_more: bool
    total: MatchCount
    matches_first: bool  # how the page was read


async def search_page(
    session: AsyncSession, compiled: CompiledSearch, skip: int, limit: int, known: KnownSearch | None = None
) -> SearchPage:
    """A page of ids and the search's total, in as few round trips as that takes.

    A page that comes back short already tells the total (most searches a salesperson types
    match a handful of leads): no count. Otherwise ``count_matches`` counts, and
    restores the parallel setting the serial page changed in its own first statement.
    ``known``: what an earlier page of the same search found (``query_api.recent``); its total is
    the answer and its way of reading pages is kept, so the page is its only statement but one.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    if known is not None:
        matches_first = known.matches_first
    else:
        matches_first = await reads_matches_first(session, compiled, skip, limit + 1)
    statement = compiled.page_of_matches(skip, limit + 1) if matches_first else compiled.page(skip, limit + 1)
    if not postgres:
        ids = list((await session.scalars(statement)).all())
        total = (
            known.total if known else count_from_page(skip, limit, len(ids)) or await count_matches(session, compiled)
        )
        return SearchPage(ids[:limit], len(ids) > limit, total, matches_first)
    if known is not None:
        # Serial for the rest of the request: what follows reads leads by id.
        await session.execute(_SERIAL_REST)
        ids = list((await session.scalars(statement)).all())
        return SearchPage(ids[:limit], len(ids) > limit, known.total, matches_first)
    previous = await session.scalar(_SERIAL)
    ids = list((await session.scalars(statement)).all())
    known_total = count_from_page(skip, limit, len(ids))
    if known_total is None:
        total = await count_matches(session, compiled, parallel_workers=previous)
    else:
        await session.execute(_RESTORE, {"value": previous})
        total = known_total
    return SearchPage(ids[:limit], len(ids) > limit, total, matches_first)


__all__ = [
    "MATCHES_FIRST_MAX_ESTIMATE",
    "SearchPage",
    "page_ids",
    "page_statement",
    "reads_matches_first",
    "search_page",
]
