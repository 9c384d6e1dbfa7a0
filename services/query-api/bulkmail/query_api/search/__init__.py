"""Close's lead search language: parse, check and compile a query to one SQL statement.

    query = parse_query('status:"Potential" has:email_addresses not emailed_template:"Intro"')
    ctx = await load_search_context(session, organization_id=org_id, user_id=user_id)
    compiled = compile_search(query, ctx)        # QueryError when refused
    ids = (await session.scalars(compiled.page(skip=0, limit=101))).all()

The grammar is ``grammar.lark``; docs/search.md says what the search reads, how it counts and how it is measured.
"""

from bulkmail.query_api.search.ast import Query, to_dict
from bulkmail.query_api.search.compiler import CompiledSearch, compile_search
from bulkmail.query_api.search.context import (
    CustomFieldRef,
    SearchContext,
    context_for,
    load_search_context,
    resolver_from,
)
from bulkmail.query_api.search.errors import QueryError
from bulkmail.query_api.search.explain import explain
from bulkmail.query_api.search.parser import parse_query
from bulkmail.query_api.search.validation import validate_saved_search

__all__ = [
    "CompiledSearch",
    "CustomFieldRef",
    "Query",
    "QueryError",
    "SearchContext",
    "compile_search",
    "context_for",
    "explain",
    "load_search_context",
    "parse_query",
    "resolver_from",
    "to_dict",
    "validate_saved_search",
]
