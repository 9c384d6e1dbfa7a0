"""``POST /api/v1/lead/import``: NDJSON (``application/x-ndjson``) or CSV (``text/csv``) bodies, streamed."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any

from fastapi import APIRouter, Request

from bulkmail.query_api.deps import AuthDep, DatabaseDep, SettingsDep
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
async def import_leads(
    request: Request, principal: AuthDep, database: DatabaseDep, settings: SettingsDep
) -> ImportResult:
    """Import leads, one object per NDJSON line (the shape of ``POST /lead/``) or one per CSV row.

    The first bad line refuses the import with its line number, before anything is written.
    Unknown status labels are refused; unknown custom fields are created, typed by their first
    value. The leads are then written in short batches (see the import service).
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in NDJSON_TYPES | CSV_TYPES:
        raise UnsupportedMediaType(f"Send application/x-ndjson or text/csv, not {media_type or 'no content type'}.")
    # Kept to be read twice (check, then write); in memory up to 8 MB, beyond that on disk.
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as upload:
        async for chunk in request.stream():
            upload.write(chunk)

        def records() -> AsyncIterator[tuple[int, Any]]:
            upload.seek(0)
            if media_type in NDJSON_TYPES:
                return ndjson_records(_chunks(upload), settings.max_json_depth)
            return csv_records(_chunks(upload))

        return await service.import_leads(database, settings, principal.organization_id, principal.user_id, records)


async def _chunks(upload: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := upload.read(256 * 1024):
        yield chunk
