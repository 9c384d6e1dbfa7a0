"""Field handlers: how `field op value` becomes a SQL condition, one class per kind of value.

The catalogue in ``scopes.py`` maps field names to these handlers (an operator table rather than
an if-chain). A handler checks the operator and the value's type first and raises a positioned
``QueryError`` when they do not fit, so wrong queries never reach the database.
"""

from __future__ import annotations

import abc
import difflib
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    and_,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
)

from bulkmail.query_api.search import ast, values
from bulkmail.query_api.search.context import SearchContext
from bulkmail.query_api.search.errors import QueryError
from bulkmail.shared.models import EmailTemplate, Lead, LeadStatus, User

Cond = ColumnElement[bool]
Column = SQLColumnExpression[Any]
TEXT_OPS = (":", "=")
ALL_OPS = (":", "=", "<", ">", "<=", ">=")


@dataclass
class Env:
    """Compilation state shared by the handlers: the context, the query text (for positions)."""

    ctx: SearchContext
    text: str
    tz: tzinfo
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    views: tuple[str, ...] = ()  # Smart Views being expanded, outermost first
    terms: int = 0
    # How a negated lead-level relation is written (see ``related_exists``): ``anti_join_sets``
    # asks for the ordered-set form in this compilation (counts and snapshots on PostgreSQL);
    # ``top_level`` is true while the compiler is in the chain of ANDs under the lead's WHERE,
    # where PostgreSQL turns a NOT EXISTS into an anti-join; ``as_set`` is true while compiling
    # the clause that is the operand of such a NOT; ``saw_anti_join`` records that the query
    # has one.
    anti_join_sets: bool = False
    top_level: bool = True
    as_set: bool = False
    saw_anti_join: bool = False
    # The filter checks related rows (an EXISTS per lead): what makes walking the leads costly.
    reads_related: bool = False

    @property
    def org(self) -> int:
        return self.ctx.organization_id

    @property
    def now(self) -> datetime:
        return self.ctx.now

    def fail(
        self, detail: str, offset: int, *, expected: Sequence[str] = (), kind: str = "invalid_value"
    ) -> QueryError:
        return QueryError(detail, query=self.text, offset=offset, expected=list(expected), kind=kind)


class Field(Protocol):
    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond: ...

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond: ...


class Handler(abc.ABC):
    """A field's compiler; the default `in (...)` is any of the values, each as `field:value`."""

    ops: tuple[str, ...] = TEXT_OPS

    @abc.abstractmethod
    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        """The condition for `name op value`."""

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond:
        return or_(*(self.compile(env, name, ":", v) for v in items))

    def check_op(self, env: Env, name: str, op: str, value: ast.Value) -> None:
        if op not in self.ops:
            raise env.fail(
                f"{name} cannot be compared with '{op}'",
                value.offset,
                expected=[f"'{o}'" for o in self.ops],
                kind="invalid_operator",
            )


@dataclass(frozen=True)
class Scope:
    """A kind of row the language can talk about: the lead, or one related object."""

    name: str
    model: Any  # the mapped class
    fields: Mapping[str, Field]
    # Free text inside this scope (None: free text is refused here).
    text: Callable[[Env, ast.Value], Cond] | None = None
    # has:<collection> → condition on this scope's row.
    has: Mapping[str, Callable[[Env], Cond]] = field(default_factory=dict)
    # Nested clauses allowed inside this scope: object name → (child scope name).
    nested: Mapping[str, str] = field(default_factory=dict)


# Links from a parent scope's row to a child scope's rows: (parent, child) → condition.
Link = Callable[[], Cond]


@dataclass(frozen=True)
class LeadLink:
    """The link from a lead to its related rows by their ``lead_id``: ``child.lead_id = leads.id``."""

    lead_id: Callable[[], Column]

    def __call__(self) -> Cond:
        linked: Cond = self.lead_id() == Lead.id
        return linked


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    ":": operator.eq,
    "=": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def compare(column: Column, op: str, bound: Any) -> Cond:
    result: Cond = _COMPARE[op](column, bound)
    return result


ZERO: ColumnElement[int] = literal_column("0", Integer)  # a literal, not a parameter, so partial indexes on `> 0` apply


# --- text ---------------------------------------------------------------------------------


def word_patterns(text: str) -> list[str]:
    """LIKE patterns for "a word starting with this (phrase)" against ' ' || lower(text)."""
    variants = {values.normalise_words(text), values.split_words(text)}
    return [f"% {values.like_escape(v)}%" for v in sorted(variants) if v]


def words_match(column: Column, text: str) -> Cond:
    spaced = literal_column("' '").concat(func.lower(column))
    return or_(*(spaced.like(p, escape="\\") for p in word_patterns(text)))


def require_text(env: Env, name: str, value: ast.Value) -> str:
    text = value.text.strip()
    if value.kind is ast.ValueKind.star or not text:
        raise env.fail(f"{name} needs some text", value.offset, expected=["a word", 'a "quoted phrase"'])
    return text


@dataclass(frozen=True)
class TextField(Handler):
    """Word-prefix / phrase match on one or more text columns (any of them)."""

    columns: Callable[[], Sequence[Column]]
    # Anywhere in the text rather than at a word start: URLs are one long "word".
    substring: bool = False

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        if value.kind is ast.ValueKind.star:
            return or_(*(func.coalesce(c, "") != "" for c in self.columns()))
        text = require_text(env, name, value)
        if self.substring:
            pattern = f"%{values.like_escape(values.normalise_words(text))}%"
            return or_(*(func.lower(c).like(pattern, escape="\\") for c in self.columns()))
        return or_(*(words_match(c, text) for c in self.columns()))


@dataclass(frozen=True)
class EmailField(Handler):
    """An address: its start, or its domain (or a part of it) after @ or a dot."""

    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        col = self.column()
        if value.kind is ast.ValueKind.star:
            return true()
        text = values.like_escape(require_text(env, name, value).lower())
        return or_(*(col.like(p, escape="\\") for p in (f"{text}%", f"%@{text}%", f"%.{text}%")))


def phone_digits(column: Column) -> Column:
    """The digits of a phone number; literals, so PostgreSQL matches the indexes of migration 0011."""
    stripped: Column = column
    for ch in " -().+/":
        stripped = func.replace(stripped, literal_column(f"'{ch}'"), literal_column("''"))
    return stripped


@dataclass(frozen=True)
class PhoneField(Handler):
    """Digits compared, so `415` finds "+1 (415) 555-0100": from the start, or after a country code."""

    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        if value.kind is ast.ValueKind.star:
            return true()
        wanted = values.digits(value.text)
        if not wanted:
            raise env.fail(f"{name} takes digits, e.g. {name}:415", value.offset, expected=["a phone number"])
        col = self.column()
        stripped = phone_digits(col)
        # After a country code of 1-3 digits: the digits from the 2nd/3rd/4th on start so. Written
        # as substr(), not '_415%', so each is a prefix a B-tree index answers (migration 0011).
        after_code = or_(*(func.substr(stripped, literal_column(str(n + 1))).like(wanted + "%") for n in (1, 2, 3)))
        return or_(stripped.like(wanted + "%"), and_(col.like("+%"), after_code))


# --- numbers, yes/no, choices ---------------------------------------------------------------


@dataclass(frozen=True)
class CountField(Handler):
    """A whole-number counter kept on the row (`calls = 0`, `contacts > 1`)."""

    column: Callable[[], Column]
    ops: tuple[str, ...] = ALL_OPS

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        if value.kind is ast.ValueKind.star:
            return self.column() > ZERO
        number = values.parse_count(value.text)
        if number is None:
            raise env.fail(
                f"{name} is a count; {value.text!r} is not a whole number", value.offset, expected=["a whole number"]
            )
        return compare(self.column(), op, number)


@dataclass(frozen=True)
class NumberField(Handler):
    column: Callable[[], Column]
    ops: tuple[str, ...] = ALL_OPS

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        col = self.column()
        if value.kind is ast.ValueKind.star:
            return col.is_not(None)
        number = values.parse_number(value.text)
        if number is None:
            raise env.fail(f"{name} is a number; {value.text!r} is not", value.offset, expected=["a number"])
        return and_(col.is_not(None), compare(col, op, number))


@dataclass(frozen=True)
class BoolField(Handler):
    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        answer = values.parse_bool(value.text)
        if answer is None:
            raise env.fail(f"{name} takes yes or no", value.offset, expected=["yes", "no"])
        return self.column() == answer


@dataclass(frozen=True)
class ChoiceField(Handler):
    """One of a fixed set of values (opportunity status, call direction); synonyms allowed."""

    column: Callable[[], Column]
    choices: Mapping[str, str]  # what the user may type → stored value

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        if value.kind is ast.ValueKind.star:
            return self.column().is_not(None)
        key = value.text.strip().lower().replace(" ", "_")
        if key not in self.choices:
            raise env.fail(
                f"{name} is one of {', '.join(sorted(set(self.choices.values())))}; not {value.text!r}",
                value.offset,
                expected=sorted(set(self.choices.values())),
            )
        return self.column() == self.choices[key]


# --- dates -------------------------------------------------------------------------------------

_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", ":": ":", "=": "="}


# A bound on a date: (instant, inclusive).
Bound = tuple[datetime, bool]


def date_bounds(env: Env, op: str, value: ast.Value, name: str) -> tuple[Bound | None, Bound | None]:
    """`name op value` as a lower and an upper bound on the date (either may be None)."""
    parsed = values.parse_date(value.text, now=env.now, tz=env.tz)
    if parsed is None:
        raise env.fail(
            f"{name} is a date; {value.text!r} is not one",
            value.offset,
            expected=["a date such as 2018-07-17", '"3 days ago"', "today", "yesterday"],
        )
    start, end = parsed.start, parsed.end
    if parsed.relative:
        # Relative values compare age: "< 3 days ago" is younger than that, i.e. a later date.
        op = _FLIP[op]
        if op in (":", "=") and start == end:
            start, end = values.day_of(start, env.tz)  # `last_called:"3 days ago"`: during that day
    if start == end:
        return {
            ":": ((start, True), (start, True)),
            "=": ((start, True), (start, True)),
            "<": (None, (start, False)),
            "<=": (None, (start, True)),
            ">": ((start, False), None),
            ">=": ((start, True), None),
        }[op]
    return {
        ":": ((start, True), (end, False)),
        "=": ((start, True), (end, False)),
        "<": (None, (start, False)),
        "<=": (None, (end, False)),
        ">": ((end, True), None),
        ">=": ((start, True), None),
    }[op]


def after(column: Column, bound: Bound) -> Cond:
    return column >= bound[0] if bound[1] else column > bound[0]


def before(column: Column, bound: Bound) -> Cond:
    return column <= bound[0] if bound[1] else column < bound[0]


def date_condition(env: Env, column: Column, op: str, value: ast.Value, name: str) -> Cond:
    lower, upper = date_bounds(env, op, value, name)
    conds = [before(column, upper) if upper else None, after(column, lower) if lower else None]
    # Never NULL, so `not last_called < "3 days ago"` keeps the leads never called.
    return and_(column.is_not(None), *(c for c in conds if c is not None))


@dataclass(frozen=True)
class DateField(Handler):
    column: Callable[[], Column]
    yes_no: bool = False  # `email_opened:yes` = ever
    ops: tuple[str, ...] = ALL_OPS

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        col = self.column()
        if value.kind is ast.ValueKind.star:
            return col.is_not(None)
        if self.yes_no and op in TEXT_OPS:
            answer = values.parse_bool(value.text)
            if answer is not None:
                return col.is_not(None) if answer else col.is_(None)
        return date_condition(env, col, op, value, name)


@dataclass(frozen=True)
class LatestDateField(Handler):
    """The latest date among a lead's related rows (`last_emailed`), asked of those rows' index.

    The lead keeps the same date in a column (``column``: sorting, ``:*``), but that column
    changes with every email sent, and an index on it would cost each send its HOT update. The
    latest date is on or after a bound when some row is, and before a bound when no row is at
    or after it; an index on the rows' dates answers both.
    """

    column: Callable[[], Column]
    # The condition "some related row's date satisfies cond(date)".
    some_row: Callable[[Env, Callable[[Column], Cond]], Cond]
    ops: tuple[str, ...] = ALL_OPS

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        if value.kind is ast.ValueKind.star:
            return self.column().is_not(None)
        lower, upper = date_bounds(env, op, value, name)
        conds: list[Cond] = []
        if lower is not None:
            conds.append(self.some_row(env, lambda date: after(date, lower)))
        if upper is not None:
            later = (upper[0], not upper[1])  # "no row after the bound"
            conds += [self.column().is_not(None), not_(self.some_row(env, lambda date: after(date, later)))]
        return and_(*conds)


# --- references by name: users, statuses, templates ------------------------------------------


def user_ids(env: Env, value: ast.Value, name: str) -> Cond | Select[Any] | int:
    """`me`, a Close-style `user_42`, or a user whose first name, last name or e-mail starts so."""
    raw = value.text.strip()
    low = raw.lower()
    if low == "me":
        if env.ctx.user_id is None:
            raise env.fail("me needs a signed-in user", value.offset, kind="invalid_value")
        return env.ctx.user_id
    if low.startswith("user_") and low[5:].isdigit() and len(low) < 20:
        return int(low[5:])
    if not raw or value.kind is ast.ValueKind.star:
        raise env.fail(f"{name} takes me or a user's name", value.offset, expected=["me", "a user's name"])
    pattern = values.like_escape(values.normalise_words(raw)) + "%"
    full = func.lower(User.first_name + " " + User.last_name)
    return select(User.id).where(
        User.organization_id == env.org,
        or_(
            func.lower(User.first_name).like(pattern, escape="\\"),
            func.lower(User.last_name).like(pattern, escape="\\"),
            func.lower(User.email).like(pattern, escape="\\"),
            full.like(pattern, escape="\\"),
        ),
    )


@dataclass(frozen=True)
class UserField(Handler):
    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        col = self.column()
        if value.kind is ast.ValueKind.star:
            return col.is_not(None)
        ids = user_ids(env, value, name)
        cond = col == ids if isinstance(ids, int) else col.in_(ids)
        return and_(col.is_not(None), cond)


def status_label(text: str) -> str:
    """Status labels match ignoring case, with `_` standing for a space (`bad_fit`)."""
    return values.normalise_words(text.replace("_", " "))


@dataclass(frozen=True)
class StatusField(Handler):
    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        return self.compile_any(env, name, [value]) if op in TEXT_OPS else self._bad(env, name, op, value)

    def _bad(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        raise AssertionError("unreachable")  # pragma: no cover

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond:
        col = self.column()
        if any(v.kind is ast.ValueKind.star for v in items):
            return col.is_not(None)
        labels = [status_label(require_text(env, name, v)) for v in items]
        known = env.ctx.statuses
        if known is None:
            stored = func.lower(func.replace(LeadStatus.label, "_", " "))
            ids = select(LeadStatus.id).where(LeadStatus.organization_id == env.org, stored.in_(labels))
            return and_(col.is_not(None), col.in_(ids))
        for value, label in zip(items, labels, strict=True):
            if label not in known:
                raise unknown_name(env, "lead status", value.text, value.offset, sorted(known), "invalid_value")
        ids_ = sorted({known[label] for label in labels})
        return and_(col.is_not(None), col == ids_[0] if len(ids_) == 1 else col.in_(ids_))


@dataclass(frozen=True)
class TemplateField(Handler):
    """An email template by its exact name, ignoring case: the bulk-email exclusion key."""

    column: Callable[[], Column]

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        self.check_op(env, name, op, value)
        return self.compile_any(env, name, [value])

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond:
        col = self.column()
        if any(v.kind is ast.ValueKind.star for v in items):
            return col.is_not(None)
        names = [values.normalise_words(require_text(env, name, v)) for v in items]
        known = env.ctx.templates
        if known is None:
            ids = select(EmailTemplate.id).where(
                EmailTemplate.organization_id == env.org, func.lower(EmailTemplate.name).in_(names)
            )
            return col.in_(ids)
        for value, template in zip(items, names, strict=True):
            if template not in known:
                # Refused, not "matches nothing": a misspelt `not emailed_template:` would resend.
                raise unknown_name(env, "email template", value.text, value.offset, sorted(known), "invalid_value")
        ids_ = sorted({known[t] for t in names})
        return col == ids_[0] if len(ids_) == 1 else col.in_(ids_)


# --- related objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RelatedField(Handler):
    """A field of a related object, asked from its parent: `title:ceo` = a contact with that title."""

    child: str  # scope name
    field_name: str
    link: Link

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        inner = env.scopes[self.child].fields[self.field_name]
        cond = inner.compile(env, name, op, value)
        return related_exists(env, self.child, self.link, cond, as_set=env.as_set)

    def compile_any(self, env: Env, name: str, items: Sequence[ast.Value]) -> Cond:
        inner = env.scopes[self.child].fields[self.field_name]
        cond = inner.compile_any(env, name, items)
        return related_exists(env, self.child, self.link, cond, as_set=env.as_set)


def related_exists(env: Env, child: str, link: Link, cond: Cond, *, as_set: bool = False) -> Cond:
    """Some related row satisfies ``cond``: a correlated EXISTS, or (``as_set``: the operand of a
    top-level NOT in a count or snapshot) an EXISTS over the related rows' lead ids as an
    ordered set.

    Why the second form: PostgreSQL 15 plans ``NOT EXISTS`` as an anti-join, and on the inner
    side of an anti-join it does not see that an index on (organization_id, template_id,
    lead_id) hands lead ids out in order once the first two are fixed. So it hashes the related
    rows: 330,000 emails of a template for the bulk-email filter at 1,000,000 leads, 168 ms for
    its count (timed side by side with the form below, at load 3). Written as an uncorrelated
    sub-select ordered by lead id (``OFFSET 0`` keeps it a sub-select of its own, planned with
    the constants as constants), the same index is read in order and a merge anti-join walks it
    beside the leads' index: 52 ms. A first page must not use this form: it checks a few leads
    one by one, and the set would be read whole for them.
    """
    model = env.scopes[child].model
    env.reads_related = True
    # The tenant wall holds inside every sub-query too, not only on the outer leads.
    tenant = model.organization_id == env.org
    if not (as_set and isinstance(link, LeadLink)):
        return exists().where(tenant, link(), cond)
    key = link.lead_id()
    lead_ids = select(key.label("lead_id")).where(tenant, cond).order_by(key).offset(0).subquery()
    return exists().where(lead_ids.c.lead_id == Lead.id)


@dataclass(frozen=True)
class Unmodelled(Handler):
    """A field Close has and bulkmail does not keep: refused with a clear reason."""

    what: str

    def compile(self, env: Env, name: str, op: str, value: ast.Value) -> Cond:
        raise env.fail(
            f"bulkmail does not keep {self.what}, so {name} cannot be searched", value.offset, kind="unsupported_field"
        )


def unknown_name(env: Env, kind: str, name: str, offset: int, known: Sequence[str], error: str) -> QueryError:
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=5, cutoff=0.6)]
    listed = close or sorted(known)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return env.fail(f"unknown {kind} {name!r}{hint}", offset, expected=listed, kind=error)
