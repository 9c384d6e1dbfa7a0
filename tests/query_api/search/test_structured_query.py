"""Close's structured filter (``s_query``): the subset that maps finds the same leads as the classic
query it stands for, on both backends; anything else is refused naming the node's path."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Dataset

from bulkmail.query_api.search import compile_search
from bulkmail.query_api.search.structured import Catalogue, StructuredQueryError, translate
from bulkmail.shared.db import Database

LEAD = {"type": "object_type", "object_type": "lead"}
HOT_LEADS_ID = 41  # a Smart View's id in the catalogue below


def regular(name: str) -> dict[str, Any]:
    return {"type": "regular_field", "object_type": "lead", "field_name": name}


def condition(field: dict[str, Any], **cond: Any) -> dict[str, Any]:
    return {"type": "field_condition", "field": field, "condition": cond}


def catalogue(dataset: Dataset) -> Catalogue:
    return Catalogue(
        statuses={i: label for label, i in dataset.statuses.items()},
        saved_searches={HOT_LEADS_ID: "Hot Leads"},
        custom_fields={ref.id: ref.name for ref in dataset.custom_fields.values() if ref.id is not None},
    )


def employees(dataset: Dataset) -> dict[str, Any]:
    return {"type": "custom_field", "custom_field_id": dataset.custom_fields["employees"].id}


# (s_query builder, the classic query it stands for, the leads both must find)
CASES: list[tuple[str, Any, str, str]] = [
    ("match_all", lambda d: {"type": "match_all"}, "*", "acme bruce globex initech umbrella stark hooli"),
    (
        "status_id",
        lambda d: {
            "type": "and",
            "queries": [LEAD, condition(regular("status_id"), type="term", values=[d.statuses["potential"]])],
        },
        "status:potential",
        "acme globex umbrella",
    ),
    (
        "or of status labels",
        lambda d: {
            "type": "or",
            "queries": [
                condition(regular("status_label"), type="term", values=["Potential"]),
                condition(regular("status_label"), type="term", values=["Bad Fit"]),
            ],
        },
        'status:potential or status:"bad fit"',
        "acme globex umbrella bruce",
    ),
    (
        "negate",
        lambda d: {"type": "negate", "query": condition(regular("status_label"), type="term", values=["Potential"])},
        "not status:potential",
        "bruce initech stark hooli",
    ),
    ("text prefix", lambda d: {"type": "text", "mode": "beginning_of_words", "value": "ac"}, "ac", "acme"),
    ("text phrase", lambda d: {"type": "text", "mode": "phrase", "value": "new york"}, '"new york"', "acme"),
    (
        "term list",
        lambda d: condition(regular("status_label"), type="term", values=["Qualified", "Bad Fit"]),
        'status in (qualified, "bad fit")',
        "initech bruce",
    ),
    ("saved_search", lambda d: {"type": "saved_search", "saved_search_id": HOT_LEADS_ID}, 'in:"Hot Leads"', None),
    (
        "custom number range",
        lambda d: condition(employees(d), type="number_range", gt=100),
        "custom.Employees > 100",
        "acme",
    ),
    (
        "custom by name exists",
        lambda d: condition({"type": "custom_field", "custom_field_name": "Industry"}, type="exists"),
        "custom.Industry:*",
        "stark",
    ),
    (
        "date range",
        lambda d: condition(
            regular("date_created"),
            type="moment_range",
            on_or_after={"type": "fixed_local_date", "value": "2026-01-01", "which": "start"},
        ),
        "created >= 2026-01-01",
        None,
    ),
    (
        "counter",
        lambda d: condition(regular("num_contacts"), type="number_range", gte=1, lt=3),
        "contacts >= 1 contacts < 3",
        None,
    ),
]


async def _labels(database: Database, dataset: Dataset, backend: str, query: str) -> list[str]:
    compiled = compile_search(query, dataset.context("sqlite" if backend == "sqlite" else "postgresql"))
    async with database.session() as session:
        ids = (await session.scalars(compiled.ids())).all()
    return [dataset.label_of(i) for i in ids]


@pytest.mark.parametrize(("s_query", "classic", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_a_structured_query_finds_what_its_classic_query_finds(
    database, dataset, backend, s_query, classic, expected
):
    text = translate(s_query(dataset), catalogue(dataset))
    found = await _labels(database, dataset, backend, text)
    assert sorted(found) == sorted(await _labels(database, dataset, backend, classic)), text
    if expected is not None:
        assert sorted(found) == sorted(expected.split()), text
    assert found, "every case must find some leads, or it proves nothing"


async def test_results_limit_and_sort_become_directives(database, dataset, backend):
    sort = [{"direction": "desc", "field": regular("date_created")}]
    text = translate({"type": "match_all"}, catalogue(dataset), results_limit=2, sort=sort)
    assert text.endswith("sort:-created limit:2")
    assert await _labels(database, dataset, backend, text) == await _labels(
        database, dataset, backend, "sort:-created limit:2"
    )
    # The whole search body Close stores ({"query": ..., "sort": ..., "results_limit": ...}) too.
    body = {"query": {"type": "match_all"}, "sort": sort, "results_limit": 2}
    assert translate(body, catalogue(dataset)) == text


REFUSED: list[tuple[str, Any, str, str]] = [
    (
        "has_related",
        {"type": "and", "queries": [LEAD, {"type": "has_related", "related_object_type": "contact"}]},
        "s_query.queries[1].type",
        "'has_related' is not supported",
    ),
    ("contacts", {"type": "object_type", "object_type": "contact"}, "s_query.object_type", "bulkmail searches leads"),
    (
        "contact field",
        condition({"type": "regular_field", "object_type": "contact", "field_name": "title"}, type="text", value="x"),
        "s_query.field.object_type",
        "only lead fields",
    ),
    (
        "relative moment",
        condition(regular("date_created"), type="moment_range", on_or_after={"type": "offset", "value": "-P3D"}),
        "s_query.condition.on_or_after.type",
        "'offset' is not supported",
    ),
    (
        "boolean condition",
        condition(regular("name"), type="boolean", value=True),
        "s_query.condition.type",
        "'boolean' is not supported",
    ),
    ("unknown view", {"type": "saved_search", "saved_search_id": 999}, "s_query.saved_search_id", "no Smart View"),
    ("not a node", {"queries": []}, "s_query", 'a query node is an object with a "type"'),
    (
        "unknown status",
        condition(regular("status_id"), type="term", values=[123456]),
        "s_query.condition.values[0]",
        "no lead status",
    ),
]


@pytest.mark.parametrize(("s_query", "path", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_node_that_does_not_map_is_refused_by_its_path(dataset, s_query, path, words):
    with pytest.raises(StructuredQueryError) as refused:
        translate(s_query, catalogue(dataset))
    assert refused.value.path == path and words in refused.value.detail
