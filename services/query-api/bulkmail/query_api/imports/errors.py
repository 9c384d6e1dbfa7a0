"""Import errors: rendered as ``{"error", "detail", "line"}`` by the API's one error handler."""

from __future__ import annotations

from bulkmail.query_api.errors import APIError


class LeadImportError(APIError):
    """A bad line refuses the whole import; raising it rolls the request's transaction back."""

    status_code = 400
    error = "Invalid import"

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}" if line else problem, line=line)


class UnsupportedMediaType(APIError):
    status_code = 415
    error = "Unsupported media type"
