"""``POST /api/v1/lead/import``: NDJSON (``application/x-ndjson``) or CSV (``text/csv``) bodies, streamed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.imports import service
from bulkmail.query_api.imports.errors import UnsupportedMediaType
from bulkmail.query_api.imports.parsing import csv_records, ndjson_records
from bulkmail.query_api.imports.schemas import ImportResult

router = APIRouter(prefix="/lead", tags=["lead"])

NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-lines"}
CSV_TYPES = {"text/csv", "application/csv"}


@router.post(
    "/import",
    response_model=ImportResult,
    responses={400: {"description": "A bad line: nothing was imported"}, 415: {"description": "Not NDJSON or CSV"}},
    # The body is read as a stream, not parsed by FastAPI: describe it for the OpenAPI document.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string", "description": "one lead object per line"}},
                "text/csv": {"schema": {"type": "string", "description": "header row, then one lead per row"}},
            },
        }
    },
)
async def import_leads(request: Request, session: SessionDep, principal: AuthDep) -> ImportResult:
    """Import leads, one object per NDJSON line (the shape of ``POST /lead/``) or one per CSV row.

    All or nothing: the first bad line refuses the import with its line number. Unknown status
    labels are refused; unknown custom fields are created, typed by their first value.
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type in NDJSON_TYPES:
        records = ndjson_records(request.stream())
    elif media_type in CSV_TYPES:
        records = csv_records(request.stream())
    else:
        raise UnsupportedMediaType(f"Send application/x-ndjson or text/csv, not {media_type or 'no content type'}.")
    return await service.import_leads(session, principal.organization_id, principal.user_id, records)
