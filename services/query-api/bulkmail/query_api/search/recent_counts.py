"""Totals of recent searches, kept a few seconds, so paging and a search run again do not count again.

A salesperson pages through a search, or a team runs the same saved search: counting its matches
again for every page costs the database the same again (a count of 10,000 matches that check a
related row each takes ~100 ms at 100,000 leads) for a number that has not changed. So what a
search page learned (its total, and whether its first page is read matches-first) is kept in
this process for ``RECENT_COUNT_TTL_S`` seconds, per organisation, user, time zone and query text
(the query's meaning depends on all four: `assigned_to:me`, dates in the user's time zone).

Any write request through this process forgets the organisation's totals as it commits (whoever
adds a lead sees it counted at once); changes made elsewhere (a send's counters, another API
process, the dispatcher) show within the TTL. The audit before a send never reads these: it
counts exactly (docs/search.md, "Counting").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from bulkmail.query_api.search.counting import MatchCount

RECENT_COUNT_TTL_S = 10.0
# Bounded: one entry is a few hundred bytes; the oldest go first.
RECENT_COUNT_MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class KnownSearch:
    """What an earlier page of the same search found out."""

    total: MatchCount
    matches_first: bool  # its pages are read from the matches (see ``paging``)


SearchKey = tuple[int, int, str, str]  # organisation, user, time zone, query text


class RecentCounts:
    def __init__(self, ttl_s: float = RECENT_COUNT_TTL_S, max_entries: int = RECENT_COUNT_MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, SearchKey], tuple[float, KnownSearch]] = OrderedDict()
        # Bumped by a write: entries stored under an older generation are never read again.
        self._generation: dict[int, int] = {}

    def _key(self, key: SearchKey) -> tuple[int, SearchKey]:
        return self._generation.get(key[0], 0), key

    def get(self, key: SearchKey) -> KnownSearch | None:
        full = self._key(key)
        found = self._entries.get(full)
        if found is None:
            return None
        stored_at, known = found
        if time.monotonic() - stored_at > self.ttl_s:
            del self._entries[full]
            return None
        return known

    def put(self, key: SearchKey, known: KnownSearch) -> None:
        if self.ttl_s <= 0:
            return
        full = self._key(key)
        self._entries[full] = (time.monotonic(), known)
        self._entries.move_to_end(full)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, organization_id: int | None) -> None:
        """The organisation's totals (every organisation's when None) are not read again."""
        if organization_id is None:
            self._entries.clear()
        else:
            self._generation[organization_id] = self._generation.get(organization_id, 0) + 1


__all__ = ["RECENT_COUNT_TTL_S", "KnownSearch", "RecentCounts", "SearchKey"]
