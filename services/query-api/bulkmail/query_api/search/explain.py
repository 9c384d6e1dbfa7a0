"""`bulkmail explain "<query>"`: the syntax tree as JSON and the SQL, or the error with its position.

Runs without a database: custom fields are accepted by name and typed as text (pass
``--custom-field "Name=number"`` to type one), Smart Views can be given with ``--smart-view``.
Exit status 2 when the query is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from bulkmail.query_api.search.ast import to_dict
from bulkmail.query_api.search.compiler import compile_search
from bulkmail.query_api.search.context import CustomFieldRef, SearchContext, resolver_from
from bulkmail.query_api.search.errors import QueryError
from bulkmail.query_api.search.parser import parse_query
from bulkmail.shared.models import CustomFieldType


def explain(query: str, ctx: SearchContext | None = None) -> dict[str, Any]:
    """The parsed query and the SQL it compiles to (raises ``QueryError``)."""
    ctx = ctx or SearchContext(organization_id=1, user_id=1)
    parsed = parse_query(query)
    compiled = compile_search(parsed, ctx)
    dialect: Dialect = sqlite.dialect() if ctx.dialect == "sqlite" else postgresql.dialect()  # type: ignore[no-untyped-call]
    statement = compiled.ids().compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    return {
        "query": query,
        "ast": to_dict(parsed),
        "sql": str(statement),
        "params": {k: _jsonable(v) for k, v in statement.params.items()},
    }


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulkmail explain", description=__doc__)
    parser.add_argument("query")
    parser.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--custom-field", action="append", default=[], metavar="NAME=TYPE")
    parser.add_argument("--smart-view", action="append", default=[], metavar="NAME=QUERY")
    args = parser.parse_args(argv)
    fields: dict[str, CustomFieldRef] | None = None
    if args.custom_field:
        fields = {}
        for i, spec in enumerate(args.custom_field, start=1):
            name, _, type_ = spec.partition("=")
            fields[name.lower()] = CustomFieldRef(i, name, CustomFieldType(type_ or "text"))
    views = dict(spec.partition("=")[::2] for spec in args.smart_view)
    ctx = SearchContext(
        organization_id=1,
        user_id=1,
        timezone=args.timezone,
        dialect=args.dialect,
        custom_fields=fields,
        saved_searches=resolver_from(views),
    )
    try:
        result = explain(args.query, ctx)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(json.dumps(exc.to_dict(), indent=2), file=sys.stderr)
        return 2
    print(json.dumps(result["ast"], indent=2))
    print()
    print(result["sql"])
    print(json.dumps(result["params"], indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
