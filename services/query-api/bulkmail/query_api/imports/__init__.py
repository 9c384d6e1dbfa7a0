"""``POST /api/v1/lead/import``: many leads at once from NDJSON or CSV, through the bulk loader."""
