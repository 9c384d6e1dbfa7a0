"""Typed syntax tree → one parameterised SQLAlchemy statement over ``leads``.

The filter becomes a WHERE clause on leads (tenant first), related objects become correlated
EXISTS sub-queries (each with its own tenant condition), Smart Views are expanded inline
(recursively, cycles refused), and `sort:` / `limit:` / `slice:` become ORDER BY, LIMIT and a
modulo partition on the lead id. The same code renders for PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    Insert,
    Select,
    and_,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql import visitors

from bulkmail.query_api.search import ast
from bulkmail.query_api.search.context import CustomFieldRef, SearchContext
from bulkmail.query_api.search.errors import MAX_SMART_VIEW_DEPTH, MAX_TERMS, QueryError
from bulkmail.query_api.search.fields import (
    Column,
    Cond,
    DateField,
    Env,
    Field,
    Handler,
    NumberField,
    Scope,
    TextField,
    Unmodelled,
    related_exists,
    unknown_name,
)
from bulkmail.query_api.search.parser import parse_query
from bulkmail.query_api.search.scopes import LEAD_STAR, LINKS, SCOPES, UNMODELLED_OBJECTS
from bulkmail.query_api.search.values import zone
from bulkmail.shared.models import BulkEmailLead, CustomField, CustomFieldType, Lead, LeadActivity, LeadCustomValue

CUSTOM_PREFIX = "custom."
# The counters a send changes live on lead_activity, one row per lead (models.LeadActivity); a
# search that reads one joins it. Joined on the organisation too, so PostgreSQL carries the
# tenant condition over and can walk ix_lead_activity_search_activities (sort:activities).
_ACTIVITY = LeadActivity.__table__
LEADS_WITH_ACTIVITY = Lead.__table__.join(
    _ACTIVITY, and_(LeadActivity.lead_id == Lead.id, LeadActivity.organization_id == Lead.organization_id)
)
# Terms that may compile to one EXISTS on related rows (`title:ceo`, `contact(...)`).
RELATION_NODES = (ast.Clause, ast.InList, ast.Nested)


@dataclass(frozen=True)
class CompiledSearch:
    """The compiled filter and ordering; build the statement you need from it."""

    where: Cond
    order_by: tuple[Column, ...]
    limit: int | None
    sorted: bool = False  # the query had a `sort:`
    # The same filter for statements that read every match (count, snapshot): on PostgreSQL a
    # negated relation is written as an ordered set (``fields.related_exists``). None: ``where``.
    where_all: Cond | None = None
    # The filter checks related rows (contacts, emails...) of each lead: see ``page_of_matches``.
    reads_related: bool = False
    # The filter reads a counter of lead_activity (every statement joins it), or the order does
    # (the ordered statements join it; a count does not need it).
    filter_reads_activity: bool = False
    order_reads_activity: bool = False

    @property
    def _all(self) -> Cond:
        return self.where if self.where_all is None else self.where_all

    def _leads(self, *columns: Any, ordered: bool) -> Select[Any]:
        """SELECT ``columns`` (the lead id by default) from leads, joined to their activity row if
        the filter reads it, or the query's order does and the statement is ``ordered`` by it."""
        stmt = select(*(columns or (Lead.id,)))
        joined = self.filter_reads_activity or (ordered and self.order_reads_activity)
        return stmt.select_from(LEADS_WITH_ACTIVITY if joined else Lead)

    def ids(self) -> Select[Any]:
        """Matching lead ids in the query's order, capped by `limit:`."""
        stmt = self._leads(ordered=True).where(self.where).order_by(*self.order_by)
        return stmt.limit(self.limit) if self.limit is not None else stmt

    def ids_where(self, *extra: Cond) -> Select[Any]:
        """Matching lead ids that also meet ``extra``, in the query's order, not capped."""
        return self._leads(ordered=True).where(self.where, *extra).order_by(*self.order_by)

    def filtered(self) -> Select[Any]:
        """Every matching lead id, unordered and uncapped (what the planner estimates)."""
        return self._leads(ordered=False).where(self.where)

    def page(self, skip: int, limit: int) -> Select[Any]:
        """One page of ids (ask for limit + 1 to learn has_more), never past `limit:`."""
        if self.limit is not None:
            limit = max(0, min(limit, self.limit - skip))
        return self._leads(ordered=True).where(self.where).order_by(*self.order_by).offset(skip).limit(limit)

    def page_of_matches(self, skip: int, limit: int) -> Select[Any]:
        """The same page, read by collecting every match first and ordering those (few) leads.

        For a query that matches few leads and checks related rows: walking the leads in order
        and checking each one's rows (what ``page`` lets PostgreSQL do) reads thousands of leads'
        rows per match found.
        """
        if self.limit is not None:
            limit = max(0, min(limit, self.limit - skip))
        # OFFSET 0: the matches are a sub-select of their own, found first, not a check per lead.
        matches = self._leads(ordered=False).where(self._all).offset(0).subquery()
        ordered = self._leads(ordered=True).where(Lead.id.in_(select(matches.c.id))).order_by(*self.order_by)
        return ordered.offset(skip).limit(limit)

    def count(self) -> Select[Any]:
        """The number of matching leads (no ORDER BY: the order does not change a count)."""
        if self.limit is None:
            return self._leads(func.count(), ordered=False).where(self._all)
        capped = self._leads(ordered=False).where(self._all).limit(self.limit).subquery()
        return select(func.count()).select_from(capped)

    def _snapshot_plan(self, max_leads: int | None) -> tuple[tuple[Column, ...], int | None]:
        cap = min(x for x in (self.limit, max_leads) if x is not None) if (self.limit or max_leads) else None
        # Without a `sort:` the snapshot takes ids in id order: deterministic, and PostgreSQL can
        # read them in order from the search indexes and stop at the cap.
        order = self.order_by if self.sorted else (Lead.id.asc(),)
        return order, cap

    def snapshot_ids(self, max_leads: int | None = None) -> Select[Any]:
        """The lead ids a snapshot would take now, in its order (what the pre-send audit checks)."""
        order, cap = self._snapshot_plan(max_leads)
        stmt = self._leads(ordered=self.sorted).where(self._all).order_by(*order)
        return stmt.limit(cap) if cap is not None else stmt

    def snapshot_insert(self, bulk_email_id: int, max_leads: int | None = None) -> Insert:
        """`INSERT INTO bulk_email_leads SELECT ...`: the snapshot as one statement."""
        order, cap = self._snapshot_plan(max_leads)
        rows = self._leads(literal(bulk_email_id), Lead.id, ordered=self.sorted).where(self._all).order_by(*order)
        if cap is not None:
            rows = rows.limit(cap)
        return insert(BulkEmailLead).from_select(["bulk_email_id", "lead_id"], rows)


def compile_search(query: ast.Query | str, ctx: SearchContext) -> CompiledSearch:
    """Compile a query (text or parsed) for one organisation and user; raises ``QueryError``."""
    parsed = parse_query(query) if isinstance(query, str) else query
    env = Env(ctx=ctx, text=parsed.text, tz=zone(ctx.timezone), scopes=SCOPES)
    where = _where(env, parsed)
    where_all = None
    if env.saw_anti_join and ctx.dialect == "postgresql":
        # Once more, with the negated relations as ordered sets, for the count and the snapshot.
        where_all = _where(replace(env, terms=0, anti_join_sets=True), parsed)
    order = _order_by(env, parsed.sort)

    def reads_activity(*clauses: Any) -> bool:
        return any(getattr(e, "table", None) is _ACTIVITY for c in clauses for e in visitors.iterate(c))

    return CompiledSearch(
        where,
        order,
        parsed.limit,
        sorted=bool(parsed.sort),
        where_all=where_all,
        reads_related=env.reads_related,
        filter_reads_activity=reads_activity(where),
        order_reads_activity=reads_activity(*order),
    )


def _where(env: Env, parsed: ast.Query) -> Cond:
    conditions: list[Cond] = [Lead.organization_id == env.org]
    if parsed.filter is not None:
        conditions.append(_node(env, parsed.filter, SCOPES["lead"]))
    if parsed.slice is not None:
        part, parts = parsed.slice
        conditions.append(Lead.id % parts == part - 1)
    return and_(*conditions)


# --- the filter ------------------------------------------------------------------------------------


def _node(env: Env, node: ast.Node, scope: Scope) -> Cond:
    if isinstance(node, ast.And):
        return and_(*(_node(env, item, scope) for item in node.items))
    if isinstance(node, ast.Or):
        with _below(env, top_level=False):
            return or_(*(_node(env, item, scope) for item in node.items))
    if isinstance(node, ast.Not):
        # A clause negated directly under the lead's chain of ANDs: its EXISTS, if it is one,
        # is planned as an anti-join (see Env).
        anti_join = env.top_level and scope.name == "lead" and isinstance(node.item, RELATION_NODES)
        env.saw_anti_join |= anti_join
        with _below(env, top_level=False, as_set=anti_join and env.anti_join_sets):
            return not_(_node(env, node.item, scope))
    if isinstance(node, ast.Everything):
        return true()
    _count_term(env, node.offset)
    if isinstance(node, ast.Text):
        return _text(env, node, scope)
    if isinstance(node, ast.Clause):
        return _clause(env, node, scope)
    if isinstance(node, ast.InList):
        return _in_list(env, node, scope)
    if isinstance(node, ast.Nested):
        return _nested(env, node, scope)
    return _smart_view(env, node, scope)


@contextmanager
def _below(env: Env, *, top_level: bool, as_set: bool = False) -> Iterator[None]:
    """Compile a sub-tree with these flags, then restore the enclosing ones."""
    saved = env.top_level, env.as_set
    env.top_level, env.as_set = top_level, as_set
    try:
        yield
    finally:
        env.top_level, env.as_set = saved


def _count_term(env: Env, offset: int) -> None:
    env.terms += 1
    if env.terms > MAX_TERMS:
        raise env.fail(
            f"the query (with its Smart Views) has more than {MAX_TERMS} terms", offset, kind="query_too_large"
        )


def _text(env: Env, node: ast.Text, scope: Scope) -> Cond:
    if scope.text is None:
        raise env.fail(
            f"free text cannot be searched inside {scope.name}(...); name a field",
            node.offset,
            expected=sorted(scope.fields),
            kind="invalid_value",
        )
    if not node.value.text.strip():
        return true()
    return scope.text(env, node.value)


def _clause(env: Env, node: ast.Clause, scope: Scope) -> Cond:
    name = node.field.strip().lower()
    if len(node.values) > 1:
        raise env.fail(
            f"{node.field} takes one value; for any of several use {node.field} in (a, b)",
            node.values[1].offset,
            kind="invalid_value",
        )
    value = node.value
    if name == "has":
        return _has(env, value, scope)
    if value.kind is ast.ValueKind.star and scope.name == "lead" and name in LEAD_STAR:
        if node.op not in (":", "="):
            raise env.fail(f"{node.field}:* takes ':'", node.offset, expected=["':'"], kind="invalid_operator")
        return LEAD_STAR[name]()
    handler = _handler(env, node.field, node.offset, scope)
    return handler.compile(env, node.field, node.op, value)


def _in_list(env: Env, node: ast.InList, scope: Scope) -> Cond:
    handler = _handler(env, node.field, node.offset, scope)
    return handler.compile_any(env, node.field, node.values)


def _handler(env: Env, field_name: str, offset: int, scope: Scope) -> Field:
    name = field_name.strip().lower()
    if scope.name == "lead" and name.startswith(CUSTOM_PREFIX):
        return _custom_field(env, field_name.strip()[len(CUSTOM_PREFIX) :], offset)
    handler = scope.fields.get(name)
    if isinstance(handler, Unmodelled):
        raise env.fail(
            f"bulkmail does not keep {handler.what}, so {field_name} cannot be searched",
            offset,
            kind="unsupported_field",
        )
    if handler is None:
        known = sorted(n for n, h in scope.fields.items() if not isinstance(h, Unmodelled))
        where = "" if scope.name == "lead" else f" inside {scope.name}(...)"
        extra = ["has", "custom.<Field Name>"] if scope.name == "lead" else []
        raise unknown_name(env, f"field{where}", field_name, offset, known + extra, "unknown_field")
    return handler


def _has(env: Env, value: ast.Value, scope: Scope) -> Cond:
    name = value.text.strip().lower()
    if name not in scope.has:
        raise unknown_name(env, "collection for has:", value.text, value.offset, sorted(scope.has), "unknown_field")
    return scope.has[name](env)


def _nested(env: Env, node: ast.Nested, scope: Scope) -> Cond:
    name = node.object
    if name in UNMODELLED_OBJECTS:
        raise env.fail(
            f"bulkmail does not keep {UNMODELLED_OBJECTS[name]}, so {name}(...) cannot be searched",
            node.offset,
            expected=[f"{n}(...)" for n in sorted(set(scope.nested.values()))],
            kind="unsupported_object",
        )
    if name not in scope.nested:
        allowed = sorted(set(scope.nested.values()))
        if scope.name != "lead" and name in SCOPES["lead"].nested:
            raise env.fail(
                f"{name}(...) cannot be nested inside {scope.name}(...)",
                node.offset,
                expected=[f"{n}(...)" for n in allowed],
                kind="invalid_nesting",
            )
        raise unknown_name(env, "object", name, node.offset, allowed, "unknown_object")
    child = SCOPES[scope.nested[name]]
    as_set = env.as_set
    with _below(env, top_level=False):
        cond = _node(env, node.body, child) if node.body is not None else true()
    return related_exists(env, child.name, LINKS[(scope.name, child.name)], cond, as_set=as_set)


def _smart_view(env: Env, node: ast.Node, scope: Scope) -> Cond:
    assert isinstance(node, ast.SmartView)
    if scope.name != "lead":
        raise env.fail("in: names a Smart View of leads; it cannot sit inside a nested clause", node.offset)
    key = node.name.strip().lower()
    chain = [*env.views, node.name]
    if key in (v.lower() for v in env.views):
        raise env.fail(
            "Smart Views refer to each other in a cycle: " + " → ".join(chain),
            node.offset,
            kind="smart_view_cycle",
        )
    if len(env.views) >= MAX_SMART_VIEW_DEPTH:
        raise env.fail(
            f"Smart Views nest more than {MAX_SMART_VIEW_DEPTH} deep: " + " → ".join(chain),
            node.offset,
            kind="query_too_deep",
        )
    text = env.ctx.saved_searches(node.name)
    if text is None:
        raise env.fail(f"there is no Smart View named {node.name!r}", node.offset, kind="unknown_smart_view")
    inner_env = replace(env, text=text, views=(*env.views, node.name))
    try:
        inner = parse_query(text)
        cond = _node(inner_env, inner.filter, scope) if inner.filter is not None else true()
    except QueryError as exc:
        if env.views:  # only the outermost in: reports, at its own position in the query typed
            raise
        raise QueryError(
            f"Smart View {node.name!r}: {exc.detail}",
            query=env.text,
            offset=node.offset,
            expected=exc.expected,
            kind=exc.kind,
        ) from None
    finally:
        env.terms = max(env.terms, inner_env.terms)
        env.saw_anti_join |= inner_env.saw_anti_join
        env.reads_related |= inner_env.reads_related
    # A Smart View's own sort/limit/slice shape its listing; as a filter only its leads count.
    return cond


# --- custom fields --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomFieldHandler(Handler):
    """`custom.<Name>`: an EXISTS on the lead's value of that field, compared by the field's type."""

    ref: CustomFieldRef

    def _inner(self) -> Handler:
        if self.ref.type is CustomFieldType.number:
            return NumberField(lambda: LeadCustomValue.value_number)
        if self.ref.type is CustomFieldType.date:
            return DateField(lambda: LeadCustomValue.value_date)
        return TextField(lambda: [LeadCustomValue.value_text])

    def of_lead(self, env: Env) -> Cond:
        """This field's value row of the outer lead (by id, or by name in the open catalogue)."""
        if self.ref.id is not None:
            field_cond = LeadCustomValue.field_id == self.ref.id
        else:
            field_cond = LeadCustomValue.field_id.in_(
                select(CustomField.id).where(
                    CustomField.organization_id == env.org, func.lower(CustomField.name) == self.ref.name.lower()
                )
            )
        return and_(LeadCustomValue.organization_id == env.org, LeadCustomValue.lead_id == Lead.id, field_cond)

    def _exists(self, env: Env, cond: Cond) -> Cond:
        env.reads_related = True
        return exists().where(self.of_lead(env), cond)

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        return self._exists(env, self._inner().compile(env, name, op, value))

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond:
        return self._exists(env, self._inner().compile_any(env, name, items))


def _custom_field(env: Env, name: str, offset: int) -> CustomFieldHandler:
    if not name.strip():
        # Refused even with an open catalogue: no field has an empty name.
        raise env.fail(
            'custom. needs the field\'s name, e.g. custom.Industry or "custom.Lead Source"',
            offset,
            expected=["custom.<Field Name>"],
            kind="unknown_field",
        )
    catalogue = env.ctx.custom_fields
    if catalogue is None:
        return CustomFieldHandler(CustomFieldRef(None, name, CustomFieldType.text))
    ref = catalogue.get(name.lower())
    if ref is None:
        # Matched without the shared "custom." prefix, which would make every name look close.
        error = unknown_name(env, "custom field", name, offset, [r.name for r in catalogue.values()], "unknown_field")
        error.expected = [f"custom.{n}" for n in error.expected]
        raise error
    return CustomFieldHandler(ref)


# --- sort -------------------------------------------------------------------------------------------

# name → (expression, nullable): nullable keys sort their empty values last on both backends.
SORT_KEYS: dict[str, tuple[Any, bool]] = {
    "created": (Lead.created_at, False),
    "date_created": (Lead.created_at, False),
    "updated": (Lead.updated_at, False),
    "date_updated": (Lead.updated_at, False),
    "name": (func.lower(Lead.name), False),
    "display_name": (func.lower(Lead.name), False),
    "company": (func.lower(Lead.name), False),
    "lead_name": (func.lower(Lead.name), False),
    "contacts": (Lead.num_contacts, False),
    "addresses": (Lead.num_addresses, False),
    "email_addresses": (Lead.num_email_addresses, False),
    "phone_numbers": (Lead.num_phone_numbers, False),
    "emails": (LeadActivity.num_emails, False),
    "calls": (LeadActivity.num_calls, False),
    "opportunities": (Lead.num_opportunities, False),
    "tasks": (Lead.num_tasks, False),
    "activities": (LeadActivity.num_emails + LeadActivity.num_calls, False),
    "last_email": (LeadActivity.last_emailed_at, True),
    "last_emailed": (LeadActivity.last_emailed_at, True),
    "last_call": (Lead.last_called_at, True),
    "last_called": (Lead.last_called_at, True),
    "email_opened": (Lead.last_email_opened_at, True),
    "id": (Lead.id, False),
}
DEFAULT_ORDER = (Lead.created_at.desc(), Lead.id.desc())


def _order_by(env: Env, keys: Sequence[ast.SortKey]) -> tuple[Column, ...]:
    if not keys:
        return DEFAULT_ORDER
    order: list[Column] = []
    for key in keys:
        name = key.field.lower()
        if name.startswith(CUSTOM_PREFIX):
            handler = _custom_field(env, key.field[len(CUSTOM_PREFIX) :], key.offset)
            expr, nullable = _custom_sort_value(env, handler.ref), True
        elif name in SORT_KEYS:
            expr, nullable = SORT_KEYS[name]
        else:
            raise unknown_name(
                env, "sort key", key.field, key.offset, [*SORT_KEYS, "custom.<Field Name>"], "unknown_field"
            )
        ordered = expr.desc() if key.descending else expr.asc()
        order.append(ordered.nulls_last() if nullable else ordered)
    # Ties broken by id, so pages and slices are stable.
    order.append(Lead.id.asc())
    return tuple(order)


def _custom_sort_value(env: Env, ref: CustomFieldRef) -> Any:
    column: Any = {
        CustomFieldType.number: LeadCustomValue.value_number,
        CustomFieldType.date: LeadCustomValue.value_date,
    }.get(ref.type, func.lower(LeadCustomValue.value_text))
    return select(column).where(CustomFieldHandler(ref).of_lead(env)).limit(1).scalar_subquery()


__all__ = ["CompiledSearch", "compile_search"]
