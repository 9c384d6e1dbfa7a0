"""`bulkmail create-user`: a user who can sign in, in an existing organisation, with clear errors."""

from __future__ import annotations

import asyncio

import pytest

from bulkmail.cli import main
from bulkmail.query_api.users.service import check_password
from bulkmail.shared.db import Database
from bulkmail.shared.settings import Settings


@pytest.fixture
def cli_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in {
        "BULKMAIL_DATA_DIR": str(tmp_path),
        "BULKMAIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "BULKMAIL_AMQP_URL": "memory://",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 0
    assert main(["create-org", "--name", "Acme Sales", "--email", "owner@acme.example"]) == 0
    return Settings()


def test_create_user_by_organisation_name_or_id_and_refusals(cli_env: Settings, capsys) -> None:
    args = ["create-user", "--email", "Sam@Acme.example", "--name", "Sam Seller", "--password", "long-enough"]
    assert main([*args, "--org", "Acme Sales"]) == 0
    assert "(sam@acme.example) can now sign in to organisation 1" in capsys.readouterr().out

    assert main([*args, "--org", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["create-user", "--email", "kim@acme.example", "--password", "short", "--org", "1"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert main(["create-user", "--email", "kim@acme.example", "--password", "long-enough", "--org", "Nope"]) == 2
    assert "no organisation matches --org 'Nope'" in capsys.readouterr().err
    # The organisation's first user (made without a password) can be given one.
    assert main(["create-user", "--email", "owner@acme.example", "--password", "owner-pass", "--org", "1"]) == 0

    async def signs_in(email: str, password: str) -> bool:
        database = Database(cli_env)
        try:
            async with database.session() as session:
                return await check_password(session, email, password) is not None
        finally:
            await database.dispose()

    assert asyncio.run(signs_in("sam@acme.example", "long-enough"))
    assert asyncio.run(signs_in("owner@acme.example", "owner-pass"))
    assert not asyncio.run(signs_in("kim@acme.example", "long-enough"))
