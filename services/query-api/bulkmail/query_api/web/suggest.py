"""Suggestions for the query box while it is typed: field names, statuses, templates, Smart Views.

The word at the cursor decides what is offered: after ``status:`` the organisation's statuses,
after ``emailed_template:`` its template names, after ``in:`` its Smart Views, after ``has:`` the
collections, after ``sort:`` the sort keys; otherwise the field names that start with the word.
Field names come from the search language's own tables, so a new field is suggested without a
change here. Each suggestion says which characters of the query it replaces.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bulkmail.query_api.search.compiler import SORT_KEYS
from bulkmail.query_api.search.fields import Unmodelled
from bulkmail.query_api.search.parser import DIRECTIVES
from bulkmail.query_api.search.scopes import LEAD_FIELDS, LEAD_HAS, LEAD_SCOPE

MAX_SUGGESTIONS = 12

FIELD_NAMES: tuple[str, ...] = tuple(
    sorted(
        {name for name, field in LEAD_FIELDS.items() if not isinstance(field, Unmodelled)}
        | {"has", "in", *DIRECTIVES}
        | {"custom"}
    )
)
NESTED_OBJECTS: tuple[str, ...] = tuple(sorted(LEAD_SCOPE.nested))
STATUS_FIELDS = {"status", "lead_status"}
TEMPLATE_FIELDS = {"emailed_template"}
BOOLEAN_VALUES = ("yes", "no")

# `field:` (or `field :`) and the value typed so far, at the end of the text before the cursor.
_VALUE_AT_CURSOR = re.compile(r'(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*:\s*(?P<value>"(?:[^"\\]|\\.)*|[^\s()"]*)$')
_WORD_AT_CURSOR = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class Catalog:
    """The organisation's names the language refers to."""

    statuses: Sequence[str] = ()
    templates: Sequence[str] = ()
    smart_views: Sequence[str] = ()


@dataclass(frozen=True)
class Suggestion:
    label: str  # what the list shows
    kind: str  # field | status | template | smart_view | collection | sort | value
    text: str  # what replaces query[start:end]
    start: int
    end: int


def quoted(value: str) -> str:
    """A value as the language reads it back: bare when it is one plain word, else in quotes."""
    if re.fullmatch(r"[A-Za-z0-9_.@+-]+", value) and value.lower() not in ("and", "or", "not"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def suggest(query: str, cursor: int, catalog: Catalog) -> list[Suggestion]:
    cursor = max(0, min(cursor, len(query)))
    before = query[:cursor]
    # Finish the word under the cursor too: replacing up to its end keeps no half-word behind.
    end = cursor + len(re.split(r"[\s()]", query[cursor:], maxsplit=1)[0])
    found = _VALUE_AT_CURSOR.search(before)
    if found:
        field = found.group("field").lower()
        typed = found.group("value")
        start = found.start("value")
        values, kind = _values_for(field, catalog)
        return _matching(values, typed.lstrip('"').replace('\\"', '"'), kind, start, end, suffix=" ")
    word = _WORD_AT_CURSOR.search(before)
    if word is None:
        return []
    start = word.start()
    fields = [Suggestion(f"{name}:", "field", f"{name}:", start, end) for name in FIELD_NAMES]
    nested = [Suggestion(f"{name}( … )", "field", f"{name}(", start, end) for name in NESTED_OBJECTS]
    prefix = word.group(0).lower()
    ranked = [s for s in fields + nested if s.text.lower().startswith(prefix) and s.text.lower() != prefix + ":"]
    return ranked[:MAX_SUGGESTIONS]


def _values_for(field: str, catalog: Catalog) -> tuple[Sequence[str], str]:
    if field in STATUS_FIELDS:
        return catalog.statuses, "status"
    if field in TEMPLATE_FIELDS:
        return catalog.templates, "template"
    if field == "in":
        return catalog.smart_views, "smart_view"
    if field == "has":
        return sorted(LEAD_HAS), "collection"
    if field == "sort":
        keys = sorted(SORT_KEYS)
        return [*keys, *(f"-{k}" for k in keys)], "sort"
    if field in ("email_opened",):
        return BOOLEAN_VALUES, "value"
    return (), "value"


def _matching(values: Sequence[str], typed: str, kind: str, start: int, end: int, suffix: str) -> list[Suggestion]:
    needle = typed.lower()
    starts = [v for v in values if v.lower().startswith(needle)]
    contains = [v for v in values if needle and needle in v.lower() and v not in starts]
    out = []
    for value in [*starts, *contains][:MAX_SUGGESTIONS]:
        text = value if kind == "sort" else quoted(value)
        out.append(Suggestion(value, kind, text + suffix, start, end))
    return out
