"""``_fields``: which names are asked for, and what a single object or a list page keeps."""

from __future__ import annotations

from bulkmail.query_api.response_fields import select_fields, wanted_fields

LEAD = {"id": 1, "display_name": "Acme", "custom": {"Industry": "x"}, "custom.Industry": "x", "url": "u"}


def test_the_names_come_from_every_fields_parameter():
    assert wanted_fields(b"") is None
    assert wanted_fields(b"query=a&_limit=3") is None
    assert wanted_fields(b"_fields=id,%20display_name&_fields=url") == {"id", "display_name", "url"}
    assert wanted_fields(b"_fields=id,_all") is None  # everything
    assert wanted_fields(b"_fields=") is None


def test_a_single_object_keeps_only_what_was_asked_for():
    assert select_fields(LEAD, frozenset({"id", "url", "nope"})) == {"id": 1, "url": "u"}
    assert select_fields(LEAD, frozenset({"custom"})) == {"custom": {"Industry": "x"}, "custom.Industry": "x"}
    assert select_fields(LEAD, frozenset({"custom.Industry"})) == {"custom.Industry": "x"}


def test_a_list_page_keeps_its_envelope_and_narrows_each_item():
    page = {"data": [LEAD, LEAD], "has_more": True, "total_results": 9}
    assert select_fields(page, frozenset({"id"})) == {
        "data": [{"id": 1}, {"id": 1}],
        "has_more": True,
        "total_results": 9,
    }
