"""Close's structured filter (``s_query``, the JSON tree of its Advanced Filtering API) → the classic language.

Close stores a bulk email's and a Smart View's audience as a JSON tree; scripts copy it from there.
The subset that the classic language can say is translated into query text, which the parser
turns into the same AST as a typed query: ``and`` / ``or`` / ``negate``, ``match_all`` and
``object_type: lead``, full-text ``text``, ``saved_search`` (``in:"View"``), and ``field_condition``
on a lead field or custom field with a ``text``, ``term``, ``number_range``, ``moment_range``
(fixed dates) or ``exists`` condition, plus ``results_limit`` (``limit:``) and ``sort``. Any other
node is refused with its path in the tree (``s_query.queries[1]``) and the node types that are
understood. The translation is also what the bulk email shows as its ``query``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import CustomField, LeadStatus, SavedSearch

NODE_TYPES = ("and", "or", "negate", "match_all", "object_type", "text", "saved_search", "field_condition")
CONDITION_TYPES = ("text", "term", "number_range", "moment_range", "exists")
MAX_NODES = 300  # the classic language's own cap on terms

# Close's lead field names whose name in the classic language differs.
LEAD_FIELDS = {
    "name": "lead_name",
    "display_name": "lead_name",
    "status_label": "status",
    "date_created": "created",
    "date_updated": "updated",
    "num_contacts": "contacts",
    "num_addresses": "addresses",
    "num_email_addresses": "email_addresses",
    "num_phone_numbers": "phone_numbers",
    "num_emails": "emails",
    "num_calls": "calls",
    "num_opportunities": "opportunities",
    "num_tasks": "tasks",
}
RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MOMENT_OPERATORS = {"on_or_after": ">=", "after": ">", "before": "<", "on_or_before": "<="}
_BARE_WORD = re.compile(r'^[^\s()"<>=:,\[\]*]+$')


class StructuredQueryError(ValueError):
    """A node that cannot be translated; ``path`` says where it is in the tree."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


@dataclass(frozen=True)
class Catalogue:
    """Ids a structured query names, resolved to the names the classic language uses."""

    statuses: Mapping[int, str]
    saved_searches: Mapping[int, str]
    custom_fields: Mapping[int, str]


async def load_catalogue(session: AsyncSession, organization_id: int) -> Catalogue:
    async def names(model: Any, label: Any) -> dict[int, str]:
        rows = await session.execute(select(model.id, label).where(model.organization_id == organization_id))
        return {int(i): str(n) for i, n in rows.all()}

    return Catalogue(
        statuses=await names(LeadStatus, LeadStatus.label),
        saved_searches=await names(SavedSearch, SavedSearch.name),
        custom_fields=await names(CustomField, CustomField.name),
    )


async def structured_query_text(
    session: AsyncSession, organization_id: int, s_query: Mapping[str, Any], results_limit: Any = None, sort: Any = None
) -> str:
    """``translate`` with the organisation's catalogue loaded first."""
    catalogue = await load_catalogue(session, organization_id)
    return translate(s_query, catalogue, results_limit=results_limit, sort=sort)


def translate(
    s_query: Mapping[str, Any],
    catalogue: Catalogue,
    *,
    results_limit: int | None = None,
    sort: list[Any] | None = None,
    path: str = "s_query",
) -> str:
    """The classic query text equivalent to ``s_query`` (raises ``StructuredQueryError``)."""
    root: Any = s_query
    if isinstance(root, Mapping) and "type" not in root and "query" in root:  # the whole search body
        results_limit = results_limit if results_limit is not None else root.get("results_limit")
        sort = sort if sort is not None else root.get("sort")
        root, path = root["query"], f"{path}.query"
    filter_text = _Translator(catalogue).node(root, path)
    return " ".join(p for p in (filter_text, directives(results_limit, sort)) if p)


def directives(results_limit: Any, sort: Any) -> str:
    """Close's ``results_limit`` and ``sort`` as the classic ``sort:`` and ``limit:`` directives."""
    parts = [_sort(sort)] if sort else []
    if results_limit is not None:
        if not isinstance(results_limit, int) or isinstance(results_limit, bool) or results_limit < 1:
            raise StructuredQueryError("results_limit", "must be a whole number of at least 1")
        parts.append(f"limit:{results_limit}")
    return " ".join(parts)


class _Translator:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.nodes = 0

    def node(self, node: Any, path: str) -> str:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise StructuredQueryError(path, f"the query has more than {MAX_NODES} nodes")
        if not isinstance(node, Mapping) or not isinstance(node.get("type"), str):
            raise StructuredQueryError(path, 'a query node is an object with a "type"')
        kind = node["type"]
        if kind in ("and", "or"):
            items = _list(node, "queries", path)
            inner = [self.node(q, f"{path}.queries[{i}]") for i, q in enumerate(items)]
            inner = [q for q in inner if q != "*"] if kind == "and" else inner
            if not inner:
                return "*"
            return inner[0] if len(inner) == 1 else "(" + f" {kind} ".join(inner) + ")"
        if kind == "negate":
            return f"not {self.node(node.get('query'), f'{path}.query')}"
        if kind == "match_all":
            return "*"
        if kind == "object_type":
            if node.get("object_type") != "lead":
                raise StructuredQueryError(
                    f"{path}.object_type", f"bulkmail searches leads; object_type {node.get('object_type')!r}"
                )
            return "*"
        if kind == "text":
            return _value(_text(node, "value", path), node.get("mode"))
        if kind == "saved_search":
            return f"in:{_quote(self._saved_search(node, path))}"
        if kind == "field_condition":
            return self.field_condition(node, path)
        raise StructuredQueryError(
            f"{path}.type", f"node type {kind!r} is not supported; supported: {', '.join(NODE_TYPES)}"
        )

    def _saved_search(self, node: Mapping[str, Any], path: str) -> str:
        ref = node.get("saved_search_id")
        name = self.catalogue.saved_searches.get(ref) if isinstance(ref, int) else None
        if name is None and isinstance(ref, str):
            name = self.catalogue.saved_searches.get(int(ref)) if ref.isdigit() else None
        if name is None:
            raise StructuredQueryError(f"{path}.saved_search_id", f"no Smart View with id {ref!r}")
        return name

    def field_condition(self, node: Mapping[str, Any], path: str) -> str:
        field = self._field(node.get("field"), f"{path}.field")
        condition = node.get("condition")
        cpath = f"{path}.condition"
        if not isinstance(condition, Mapping):
            raise StructuredQueryError(cpath, 'a field_condition needs a "condition" object')
        kind = condition.get("type")
        if field == "status_id":
            return self._status_condition(condition, cpath)
        name = _quote_field(field)
        if kind == "text":
            return f"{name}:{_value(_text(condition, 'value', cpath), condition.get('mode'))}"
        if kind == "term":
            values = [_term(v, f"{cpath}.values[{i}]") for i, v in enumerate(_list(condition, "values", cpath))]
            if not values:
                raise StructuredQueryError(f"{cpath}.values", "a term condition needs at least one value")
            if len(values) == 1:
                return f"{name}:{_quote(values[0])}"
            return f"{name} in (" + ", ".join(_quote(v) for v in values) + ")"
        if kind == "number_range":
            bounds = [
                f"{name} {op} {_number(condition[key], f'{cpath}.{key}')}"
                for key, op in RANGE_OPERATORS.items()
                if condition.get(key) is not None
            ]
            return _all(bounds, cpath)
        if kind == "moment_range":
            bounds = [
                f"{name} {op} {_quote(_moment(condition[key], f'{cpath}.{key}'))}"
                for key, op in MOMENT_OPERATORS.items()
                if condition.get(key) is not None
            ]
            return _all(bounds, cpath)
        if kind == "exists":
            return f"{name}:*"
        raise StructuredQueryError(
            f"{cpath}.type", f"condition type {kind!r} is not supported; supported: {', '.join(CONDITION_TYPES)}"
        )

    def _field(self, field: Any, path: str) -> str:
        if not isinstance(field, Mapping):
            raise StructuredQueryError(path, 'a field_condition needs a "field" object')
        kind = field.get("type")
        if kind == "regular_field":
            if field.get("object_type", "lead") != "lead":
                raise StructuredQueryError(
                    f"{path}.object_type",
                    f"only lead fields can be filtered here, not {field.get('object_type')!r} "
                    "(has_related is not supported)",
                )
            field_name = _text(field, "field_name", path)
            return LEAD_FIELDS.get(field_name, field_name)
        if kind == "custom_field":
            ref = field.get("custom_field_id", field.get("custom_field_name"))
            name: str | None = None
            if isinstance(ref, int) and not isinstance(ref, bool):
                name = self.catalogue.custom_fields.get(ref)
            elif isinstance(ref, str) and ref.isdigit():
                name = self.catalogue.custom_fields.get(int(ref))
            elif isinstance(ref, str) and ref.strip():
                name = ref  # bulkmail's custom fields are known by name
            if name is None:
                raise StructuredQueryError(f"{path}.custom_field_id", f"no custom field {ref!r}")
            return f"custom.{name}"
        raise StructuredQueryError(
            f"{path}.type", f"field type {kind!r} is not supported; supported: regular_field, custom_field"
        )

    def _status_condition(self, condition: Mapping[str, Any], path: str) -> str:
        if condition.get("type") != "term":
            raise StructuredQueryError(f"{path}.type", "status_id takes a term condition")
        labels = []
        for i, ref in enumerate(_list(condition, "values", path)):
            label = self.catalogue.statuses.get(int(ref)) if str(ref).isdigit() else None
            if label is None:
                raise StructuredQueryError(f"{path}.values[{i}]", f"no lead status with id {ref!r}")
            labels.append(label)
        if not labels:
            raise StructuredQueryError(f"{path}.values", "a term condition needs at least one value")
        return "status in (" + ", ".join(_quote(v) for v in labels) + ")"


def _sort(sort: Any) -> str:
    keys = []
    for i, item in enumerate(sort if isinstance(sort, list) else [sort]):
        path = f"sort[{i}]"
        if not isinstance(item, Mapping):
            raise StructuredQueryError(path, 'a sort key is an object with "field" and "direction"')
        field = item.get("field")
        if not isinstance(field, Mapping) or field.get("type") != "regular_field":
            raise StructuredQueryError(f"{path}.field", "only regular lead fields can be sorted on")
        name = _text(field, "field_name", f"{path}.field")
        direction = item.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise StructuredQueryError(f"{path}.direction", "is asc or desc")
        keys.append(("-" if direction == "desc" else "") + LEAD_FIELDS.get(name, name))
    return "sort:" + ",".join(keys) if keys else ""


def _list(node: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = node.get(key)
    if not isinstance(value, list):
        raise StructuredQueryError(f"{path}.{key}", "must be a list")
    return value


def _text(node: Mapping[str, Any], key: str, path: str) -> str:
    value = node.get(key)
    if not isinstance(value, str):
        raise StructuredQueryError(f"{path}.{key}", "must be a string")
    return value


def _term(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StructuredQueryError(path, "a term value is a string or a number")
    return str(value)


def _number(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StructuredQueryError(path, "must be a number")
    return str(value)


def _moment(value: Any, path: str) -> str:
    """Fixed moments only; Close's relative ones ("3 days ago" in its own shape) are not translated."""
    if isinstance(value, Mapping) and value.get("type") in ("fixed_local_date", "fixed_utc"):
        return _text(value, "value", path)
    kind = value.get("type") if isinstance(value, Mapping) else type(value).__name__
    raise StructuredQueryError(
        f"{path}.type", f"moment {kind!r} is not supported; supported: fixed_local_date, fixed_utc"
    )


def _all(bounds: list[str], path: str) -> str:
    if not bounds:
        raise StructuredQueryError(path, "a range needs at least one bound")
    return bounds[0] if len(bounds) == 1 else "(" + " ".join(bounds) + ")"


def _value(text: str, mode: Any) -> str:
    """``beginning_of_words`` is the classic bare word (a prefix); other modes are a phrase."""
    if mode == "beginning_of_words" and _BARE_WORD.match(text) and text.lower() not in ("and", "or", "not"):
        return text
    return _quote(text)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_field(name: str) -> str:
    return name if _BARE_WORD.match(name) else _quote(name)
