"""Request bodies to lead objects, streamed: NDJSON lines or CSV rows, each with its line number."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from bulkmail.query_api.imports.errors import LeadImportError
from bulkmail.query_api.imports.schemas import CSV_COLUMNS
from bulkmail.query_api.request_limits import JSONProblem, load_json

MAX_LINE_BYTES = 1_000_000  # one lead per line: anything longer is a broken file, not a lead
CUSTOM_PREFIX = "custom."


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Splitting bytes on b"\n" is safe for UTF-8: no multi-byte character contains that byte.
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")
        if len(buffer) > MAX_LINE_BYTES:
            raise LeadImportError(0, f"a line is longer than {MAX_LINE_BYTES:,} bytes")
    if buffer:
        yield buffer.removesuffix(b"\r")


def _decode(line: bytes, line_no: int) -> str:
    if b"\x00" in line:
        raise LeadImportError(line_no, "a NUL byte; no text field can hold it")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise LeadImportError(line_no, "not UTF-8 text") from None


async def ndjson_records(chunks: AsyncIterator[bytes], max_depth: int) -> AsyncIterator[tuple[int, Any]]:
    """One JSON lead object per line, held to the API's JSON bounds; blank lines are skipped."""
    line_no = 0
    async for line in _lines(chunks):
        line_no += 1
        if not line.strip():
            continue
        try:
            value = load_json(_decode(line, line_no), max_depth)
        except JSONProblem as exc:
            raise LeadImportError(line_no, str(exc).replace("at line 1, column", "at column")) from None
        yield line_no, value


async def csv_records(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """CSV with a header row (``CSV_COLUMNS`` and ``custom.<Field Name>``), as lead objects.

    A quoted cell may span lines; the line number reported is the one the row starts on.
    """
    header: list[str] | None = None
    record, record_line, line_no = "", 0, 0
    async for line in _lines(chunks):
        line_no += 1
        text = _decode(line, line_no)
        if line_no == 1:
            text = text.removeprefix("\ufeff")  # Excel's byte order mark
        if not record:
            record_line = line_no
        record += text + "\n"
        if record.count('"') % 2:
            continue  # inside a quoted cell: the row goes on on the next line
        cells = next(csv.reader(io.StringIO(record)), [])
        record = ""
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = _check_header(cells, record_line)
            continue
        if len(cells) != len(header):
            raise LeadImportError(record_line, f"{len(cells)} cells, but the header has {len(header)} columns")
        yield record_line, _lead_object(dict(zip(header, (c.strip() for c in cells), strict=True)))
    if record:
        raise LeadImportError(record_line, "a quoted cell is never closed")


def _check_header(cells: list[str], line_no: int) -> list[str]:
    header = [cell.strip() for cell in cells]
    for name in header:
        if name not in CSV_COLUMNS and not (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)):
            expected = ", ".join(CSV_COLUMNS)
            raise LeadImportError(line_no, f"unknown column {name!r}; expected {expected} or custom.<Field Name>")
    if len(set(header)) != len(header):
        raise LeadImportError(line_no, "a column appears twice")
    return header


def _lead_object(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as the lead object NDJSON would carry, so both go through one validation."""
    lead: dict[str, Any] = {key: row[key] for key in ("name", "url", "description") if row.get(key)}
    if row.get("status"):
        lead["status"] = row["status"]
    custom = {k[len(CUSTOM_PREFIX) :]: v for k, v in row.items() if k.startswith(CUSTOM_PREFIX) and v}
    if custom:
        lead["custom"] = custom
    if any(row.get(k) for k in ("contact_name", "contact_title", "email", "phone")):
        contact: dict[str, Any] = {"name": row.get("contact_name", ""), "title": row.get("contact_title", "")}
        contact["emails"] = [{"email": row["email"]}] if row.get("email") else []
        contact["phones"] = [{"phone": row["phone"]}] if row.get("phone") else []
        lead["contacts"] = [contact]
    address = {k: row[k] for k in ("city", "state", "country", "zipcode") if row.get(k)}
    if address:
        lead["addresses"] = [address]
    return lead
