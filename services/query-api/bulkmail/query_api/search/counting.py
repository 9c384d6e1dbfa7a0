"""How many leads a search matches: exact when that is quick, else an estimate marked approximate.

A search box that counts as the user types must not hold the database for seconds on a query
that matches half a million leads. On PostgreSQL the planner's estimate of the matching rows
comes first; when it is large, it is the answer, marked approximate (Close shows "~12,345
leads"). Otherwise the exact count runs with a time budget, and past it the estimate answers.
SQLite (the embedded mode, a small database) always counts exactly.

Never use this for what is about to be sent: the audit before a send and the snapshot count
exactly, whatever it costs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from bulkmail.query_api.search.compiler import CompiledSearch

# What an exact count may take before the estimate answers instead (a web app debounces key
# strokes at ~250 ms; the first page and the request itself need the rest).
EXACT_COUNT_BUDGET_MS = 100
# Above this many estimated matches the count is not even tried: at 1,000,000 leads on a busy
# 2-core machine, counting 20,000 matches that each need a related row checked took 150-500 ms.
EXACT_COUNT_MAX_ESTIMATE = 20_000
QUERY_CANCELED = "57014"  # SQLSTATE of a statement stopped by statement_timeout
# Sets the budget for the rest of the transaction and returns the setting it replaces.
_SET_TIMEOUT = text("SELECT current_setting('statement_timeout') || left(set_config('statement_timeout', :t, true), 0)")
_SET_TIMEOUT_AND_PARALLEL = text(
    "SELECT current_setting('statement_timeout') || left(set_config('statement_timeout', :t, true), 0)"
    " || left(set_config('max_parallel_workers_per_gather', :n, true), 0)"
)
_SET_PARALLEL = text("SELECT set_config('max_parallel_workers_per_gather', :n, true)")


@dataclass(frozen=True, slots=True)
class MatchCount:
    value: int
    approximate: bool  # True: the planner's estimate, the exact count would have taken too long


class _Explain(Executable, ClauseElement):
    """``EXPLAIN (FORMAT JSON) <statement>`` with the statement's own bound parameters."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(_Explain, "postgresql")
def _compile_explain(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def count_from_page(skip: int, limit: int, n_read: int) -> MatchCount | None:
    """The exact count a page already tells, or None: asked for ``limit + 1`` ids from ``skip``
    and given fewer, the search matched ``skip + n_read`` (when it gave any at all)."""
    if n_read > limit or (n_read == 0 and skip > 0):
        return None
    return MatchCount(skip + n_read, approximate=False)


async def count_matches(
    session: AsyncSession,
    compiled: CompiledSearch,
    *,
    budget_ms: int = EXACT_COUNT_BUDGET_MS,
    parallel_workers: str | None = None,
) -> MatchCount:
    """The number of leads ``compiled`` matches; approximate only on PostgreSQL past the budget.

    ``parallel_workers``: a ``max_parallel_workers_per_gather`` to set for the rest of the
    transaction, in the statement that sets the budget (``paging.search_page`` restores the
    setting its serial page changed this way, one round trip fewer).
    """
    if session.get_bind().dialect.name != "postgresql":
        return MatchCount(int(await session.scalar(compiled.count()) or 0), approximate=False)
    # The estimate first (planning only, milliseconds): counting exactly what is estimated at
    # hundreds of thousands of leads would use the whole budget and then answer the estimate.
    estimate = await estimate_matches(session, compiled)
    if estimate > EXACT_COUNT_MAX_ESTIMATE:
        if parallel_workers is not None:
            await session.execute(_SET_PARALLEL, {"n": parallel_workers})
        return MatchCount(estimate, approximate=True)
    try:
        # A savepoint: a cancelled statement aborts only it, and rolling it back also undoes
        # the local statement_timeout.
        async with session.begin_nested():
            if parallel_workers is None:
                previous = await session.scalar(_SET_TIMEOUT, {"t": f"{budget_ms}ms"})
            else:
                previous = await session.scalar(
                    _SET_TIMEOUT_AND_PARALLEL, {"t": f"{budget_ms}ms", "n": parallel_workers}
                )
            value = int(await session.scalar(compiled.count()) or 0)
            await session.execute(text("SELECT set_config('statement_timeout', :t, true)"), {"t": previous})
        return MatchCount(value, approximate=False)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != QUERY_CANCELED:
            raise
    if parallel_workers is not None:  # set inside the savepoint that was rolled back
        await session.execute(_SET_PARALLEL, {"n": parallel_workers})
    return MatchCount(estimate, approximate=True)


async def estimate_matches(session: AsyncSession, compiled: CompiledSearch, *, capped: bool = True) -> int:
    """The planner's estimate of the matching rows (no rows are read), capped by ``limit:``
    unless ``capped`` is false."""
    plan = await session.scalar(_Explain(compiled.filtered()))
    if isinstance(plan, str):  # asyncpg hands json back as text
        plan = json.loads(plan)
    rows = int(plan[0]["Plan"]["Plan Rows"]) if plan else 0
    if capped and compiled.limit is not None:
        rows = min(rows, compiled.limit)
    return rows


__all__ = [
    "EXACT_COUNT_BUDGET_MS",
    "EXACT_COUNT_MAX_ESTIMATE",
    "MatchCount",
    "count_from_page",
    "count_matches",
    "estimate_matches",
]
