"""The one exception a search query can raise, and the caps that keep queries cheap.

Every refusal (syntax, unknown field, wrong value type, a cap exceeded, a Smart View cycle) is a
``QueryError`` carrying the position in the query, so the API can answer 400 and the command line
can point at the mistake. Nothing else may escape from parsing or compiling a query.
"""

from __future__ import annotations

from typing import Any

# Caps, so that no query can make the server parse or plan for long.
MAX_QUERY_LENGTH = 5_000  # characters
MAX_DEPTH = 24  # nesting of parentheses, not and nested clauses together
MAX_IN_LIST = 1_000  # values in one `in (...)` list
MAX_TERMS = 300  # clauses and free-text terms after Smart Views are expanded
MAX_SMART_VIEW_DEPTH = 8  # `in:"A"` whose query says `in:"B"`...


class QueryError(ValueError):
    """A search query refused before it reached the database.

    ``kind`` is a stable code (``syntax_error``, ``unknown_field``, ``invalid_value``...);
    ``line`` and ``column`` are 1-based; ``expected`` lists, in words, what would have been valid.
    """

    def __init__(
        self,
        detail: str,
        *,
        query: str,
        offset: int,
        expected: list[str] | None = None,
        kind: str = "invalid_query",
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.kind = kind
        self.query = query
        self.offset = max(0, min(offset, len(query)))
        self.expected = list(expected or [])
        self.line, self.column = line_and_column(query, self.offset)

    @property
    def snippet(self) -> str:
        """The offending line with a caret under the position."""
        lines = self.query.split("\n")
        line = lines[self.line - 1] if self.line - 1 < len(lines) else ""
        return f"{line}\n{' ' * (self.column - 1)}^"

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.kind,
            "detail": self.detail,
            "line": self.line,
            "column": self.column,
            "expected": self.expected,
            "snippet": self.snippet,
        }

    def __str__(self) -> str:
        text = f"{self.detail} (line {self.line}, column {self.column})"
        if self.expected:
            text += "; expected " + ", ".join(self.expected)
        return f"{text}\n{self.snippet}"


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column
