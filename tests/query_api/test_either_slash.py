"""Every API route answers the same with and without its trailing slash (Close's client adds one)."""

from __future__ import annotations

import re

import pytest


# Routing does not depend on the database: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_every_route_answers_the_same_with_and_without_the_slash(app, tenant):
    paths = {p: ops for p, ops in app.openapi()["paths"].items() if p.startswith("/api/v1/")}
    assert len(paths) > 15
    for declared_path, operations in paths.items():
        # Ids that exist in no organisation: each route answers its own 404 or 400, never the router's.
        path = re.sub(r"\{[^}]+\}", "987654321", declared_path)
        other = path[:-1] if path.endswith("/") else path + "/"
        for method in sorted(m.upper() for m in operations):
            declared = await tenant.client.request(method, path, json=None)
            toggled = await tenant.client.request(method, other, json=None)
            assert declared.status_code not in (405, 307), (method, path, declared.text)
            assert (toggled.status_code, toggled.json()) == (declared.status_code, declared.json()), (method, other)
            assert not toggled.history, f"{method} {other} was redirected, not served"


async def test_a_path_no_route_has_either_way_is_still_a_404(tenant):
    assert (await tenant.client.get("/api/v1/no_such_resource/")).status_code == 404
    assert (await tenant.client.get("/api/v1/no_such_resource")).status_code == 404
