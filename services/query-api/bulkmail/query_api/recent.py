"""What recent requests read, kept a few seconds per organisation, so the next request does not read it again.

A salesperson pages through a search, or a team runs the same saved search: counting its matches
again for every page costs the database the same count again (10,000 matches that each check a
related row: ~100 ms at 100,000 leads) for a number that has not changed; and every search reads
the organisation's catalogue (custom fields, Smart Views, statuses, templates) before compiling.
So the query-api process keeps both for ``RECENT_TTL_S`` seconds:

- ``counts``: a search's total and how its pages are read, per organisation, user, time zone and
  query text (the query's meaning depends on all four: `assigned_to:me`, dates in the user's zone);
- ``catalogues``: an organisation's catalogue.

Any write request through this process forgets what it kept of the organisation as it completes
(``ForgetOnWrite``; of every organisation when the request is neither an API key's nor a signed-in
web user's): whoever adds a lead or a custom field, or saves a Smart View, sees it at once.
Changes made elsewhere (a send's counters, another API process) show within the TTL. The audit
before a send never reads these: it counts exactly (docs/search.md, "Counts: exact, or
approximate and flagged").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from bulkmail.query_api.search.context import Catalogue
    from bulkmail.query_api.search.paging import KnownSearch

RECENT_TTL_S = 10.0
# Bounded: an entry is a few hundred bytes (a catalogue a few KB); the oldest go first.
RECENT_MAX_ENTRIES = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Values per (organisation, key), each kept ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float = RECENT_TTL_S, max_entries: int = RECENT_MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[int, int, K], tuple[float, V]] = OrderedDict()
        # Bumped by a write: what was stored under an older generation is never read again.
        self._generation: dict[int, int] = {}

    def get(self, organization_id: int, key: K) -> V | None:
        full = (organization_id, self._generation.get(organization_id, 0), key)
        found = self._entries.get(full)
        if found is None:
            return None
        stored_at, value = found
        if time.monotonic() - stored_at > self.ttl_s:
            del self._entries[full]
            return None
        return value

    def put(self, organization_id: int, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        full = (organization_id, self._generation.get(organization_id, 0), key)
        self._entries[full] = (time.monotonic(), value)
        self._entries.move_to_end(full)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, organization_id: int | None) -> None:
        """What is kept of the organisation (of every organisation when None) is not read again."""
        if organization_id is None:
            self._entries.clear()
        else:
            self._generation[organization_id] = self._generation.get(organization_id, 0) + 1


@dataclass
class Kept:
    """Everything the process keeps (``app.state.kept``)."""

    counts: Recent[tuple[int, str, str], KnownSearch] = field(default_factory=Recent)  # (user, zone, query)
    catalogues: Recent[None, Catalogue] = field(default_factory=Recent)

    def forget(self, organization_id: int | None) -> None:
        self.counts.forget(organization_id)
        self.catalogues.forget(organization_id)


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ForgetOnWrite:
    """As a write request starts its answer (its transaction has committed: the session
    dependency commits before the response), forget what was kept of its organisation
    (``scope["state"]["organization_id"]``, set by the API key's dependency and by the web's
    session guard; every organisation's for a request without one)."""

    def __init__(self, app: ASGIApp, kept: Kept) -> None:
        self.app, self.kept = app, kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return

        async def forget_then_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.kept.forget(scope.get("state", {}).get("organization_id"))
            await send(message)

        await self.app(scope, receive, forget_then_send)


__all__ = ["RECENT_TTL_S", "ForgetOnWrite", "Kept", "Recent"]
