"""The message contracts and the AsyncAPI document that describes them."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from bulkmail.shared.contracts import BulkEmailEvent, EmailEvent, EmailOutcome, SendChunk

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_asyncapi_document_matches_the_contracts():
    spec = importlib.util.spec_from_file_location("asyncapi", ROOT / "scripts" / "asyncapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "asyncapi.yaml").read_text() == module.render(), "run `make asyncapi`"


def test_contracts_are_versioned_and_refuse_other_versions():
    chunk = SendChunk(bulk_email_id=1, organization_id=2, chunk_id=3)
    assert SendChunk.model_validate_json(chunk.model_dump_json()) == chunk
    with pytest.raises(ValidationError):
        SendChunk.model_validate({"v": 2, "bulk_email_id": 1, "organization_id": 2, "chunk_id": 3})


def test_email_events_carry_ids_not_addresses():
    event = EmailEvent(
        type="email.sent",
        organization_id=1,
        bulk_email_id=2,
        emails=[EmailOutcome(recipient_id=3, lead_id=4, message_id="<m3@x>")],
        occurred_at=datetime.now(UTC),
    )
    assert "@" not in event.model_dump_json().replace("<m3@x>", "")
    assert EmailEvent.model_validate_json(event.model_dump_json()) == event
    with pytest.raises(ValidationError):  # an empty batch is never published
        EmailEvent(type="email.sent", organization_id=1, bulk_email_id=2, emails=[], occurred_at=datetime.now(UTC))
    assert set(BulkEmailEvent.model_fields) >= {"type", "organization_id", "bulk_email_id", "status", "counts"}
