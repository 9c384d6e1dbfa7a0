"""The typed syntax tree of a search query.

The parser produces these nodes and nothing else; the compiler reads them. Every node keeps the
offset of its first character in the query so later stages (unknown field, wrong value type)
can point at the mistake too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, is_dataclass
from typing import Any


class ValueKind(enum.StrEnum):
    word = "word"  # unquoted: a word prefix
    phrase = "phrase"  # "quoted": the words as a phrase
    relative_date = "relative_date"  # 3 days ago, unquoted
    star = "star"  # *: any value
    bracketed = "bracketed"  # [Simple Donation]: an old choice-value syntax, read as a phrase


@dataclass(frozen=True, slots=True)
class Value:
    text: str
    kind: ValueKind
    offset: int

    @property
    def is_text(self) -> bool:
        return self.kind in (ValueKind.word, ValueKind.phrase, ValueKind.bracketed)


@dataclass(frozen=True, slots=True)
class Everything:
    """`*`: every lead (or, inside a nested clause, any related object)."""

    offset: int


@dataclass(frozen=True, slots=True)
class Text:
    """Free text: a word prefix or a quoted phrase in any searchable field."""

    value: Value
    offset: int


@dataclass(frozen=True, slots=True)
class Clause:
    """`field op value`; several values only for `sort:a,b`."""

    field: str
    op: str  # one of : = < > <= >=
    values: tuple[Value, ...]
    offset: int

    @property
    def value(self) -> Value:
        return self.values[0]


@dataclass(frozen=True, slots=True)
class InList:
    """`field in (a, b, ...)`: any of the values."""

    field: str
    values: tuple[Value, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class Nested:
    """`contact(...)`: the inner terms hold for the same related object."""

    object: str
    body: Node | None
    offset: int


@dataclass(frozen=True, slots=True)
class SmartView:
    """`in:"Name"`: the leads of a saved search."""

    name: str
    offset: int


@dataclass(frozen=True, slots=True)
class Not:
    item: Node
    offset: int


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]
    offset: int


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]
    offset: int


Node = Everything | Text | Clause | InList | Nested | SmartView | Not | And | Or


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool
    offset: int


@dataclass(frozen=True, slots=True)
class Query:
    """A whole query: the filter and its directives (`sort:`, `limit:`, `slice:`)."""

    text: str
    filter: Node | None
    sort: tuple[SortKey, ...] = ()
    limit: int | None = None
    # 1-based part i of n: leads whose id modulo n is i - 1.
    slice: tuple[int, int] | None = None


def to_dict(node: object) -> Any:
    """A JSON-ready form of a tree, each node tagged with its type (for `bulkmail explain`)."""
    if is_dataclass(node) and not isinstance(node, type):
        out: dict[str, Any] = {"type": type(node).__name__}
        for f in fields(node):
            out[f.name] = to_dict(getattr(node, f.name))
        return out
    if isinstance(node, tuple | list):
        return [to_dict(item) for item in node]
    if isinstance(node, enum.Enum):
        return node.value
    return node
