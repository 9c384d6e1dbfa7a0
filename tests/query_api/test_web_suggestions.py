"""The query box's suggestions and the audit's one-click query fixes: pure functions, as tables."""

from __future__ import annotations

import pytest

from bulkmail.query_api.bulk_emails.service import with_limit, without_template
from bulkmail.query_api.search import ast, parse_query
from bulkmail.query_api.web.suggest import Catalog, quoted, suggest

CATALOG = Catalog(
    statuses=["Potential", "Bad Fit", "Customer"],
    templates=["Intro", 'Follow "up"', "Check-in"],
    smart_views=["Berlin prospects"],
)


def _apply(query: str, cursor: int, label: str) -> str:
    found = {s.label: s for s in suggest(query, cursor, CATALOG)}
    s = found[label]
    return query[: s.start] + s.text + query[s.end :]


@pytest.mark.parametrize(
    ("query", "label", "result"),
    [
        ("stat", "status:", "status:"),
        ("city:berlin emailed_te", "emailed_template:", "city:berlin emailed_template:"),
        ("status:pot", "Potential", "status:Potential "),
        ("status:bad", "Bad Fit", 'status:"Bad Fit" '),
        ('not emailed_template:"fol', 'Follow "up"', 'not emailed_template:"Follow \\"up\\"" '),
        ("in:ber", "Berlin prospects", 'in:"Berlin prospects" '),
        ("has:email", "email_addresses", "has:email_addresses "),
        ("sort:-last_e", "-last_emailed", "sort:-last_emailed "),
        ("conta", "contact( … )", "contact("),
    ],
)
def test_a_suggestion_completes_the_word_at_the_cursor(query: str, label: str, result: str) -> None:
    assert _apply(query, len(query), label) == result


def test_the_word_under_the_cursor_is_replaced_whole_and_the_rest_kept() -> None:
    query = "status:po city:berlin"
    assert _apply(query, len("status:po"), "Potential") == "status:Potential  city:berlin"


def test_what_a_suggestion_writes_is_read_back_by_the_parser() -> None:
    for value in ["Bad Fit", 'Follow "up"', "a\\b", "or"]:
        parse_query(f"emailed_template:{quoted(value)}")  # no QueryError


def test_nothing_is_suggested_after_a_space_or_for_unknown_words() -> None:
    assert suggest("status:won ", 11, CATALOG) == []
    assert suggest("zzz", 3, CATALOG) == []


@pytest.mark.parametrize(
    ("query", "limit", "fixed"),
    [
        ("*", 100_000, "* limit:100000"),
        ("status:won limit:250000", 100_000, "status:won limit:100000"),
        ("status:won LIMIT : 250000 city:x", 50, "status:won limit:50 city:x"),
    ],
)
def test_the_limit_fix_caps_the_query(query: str, limit: int, fixed: str) -> None:
    assert with_limit(query, limit) == fixed
    parse_query(fixed)


@pytest.mark.parametrize(
    ("query", "fixed"),
    [
        ("status:won", 'status:won not emailed_template:"Intro"'),
        ("*", 'not emailed_template:"Intro"'),
        ("status:won or status:lost", '(status:won or status:lost) not emailed_template:"Intro"'),
    ],
)
def test_the_resend_fix_leaves_out_earlier_recipients(query: str, fixed: str) -> None:
    assert without_template(query, "Intro") == fixed
    parse_query(fixed)


def test_the_resend_fix_quotes_any_template_name() -> None:
    name = 'Say "hi" \\ now'
    parsed = parse_query(without_template("status:won", name))
    assert isinstance(parsed.filter, ast.And)
    excluded = parsed.filter.items[1]
    assert isinstance(excluded, ast.Not) and isinstance(excluded.item, ast.Clause)
    assert excluded.item.field == "emailed_template"
    assert [v.text for v in excluded.item.values] == [name]
