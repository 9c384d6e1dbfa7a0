"""The ``bulkmail`` command: run the services (together or one each), migrate, seed, explain."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from bulkmail.shared import event_loop
from bulkmail.shared.logging import configure_logging
from bulkmail.shared.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explain"]:
        from bulkmail.query_api.search.explain import main as explain_main

        return explain_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"bulkmail: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return int(args.handler(settings, args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulkmail", description="Bulk email through your own SMTP server.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="all three services in one process (embedded default: SQLite, demo data)")
    run.add_argument("--demo-leads", type=int, default=2_000, help="leads in the demo organisation (first start only)")
    run.set_defaults(handler=_run)

    api = sub.add_parser("query-api", help="the HTTP API")
    api.set_defaults(handler=_query_api)

    for name, help_text in (("dispatcher", "turns snapshots into recipients and chunks"), ("mailer", "sends chunks")):
        worker = sub.add_parser(name, help=help_text)
        worker.add_argument("--check", action="store_true", help="exit 0 if a worker on this machine is alive")
        worker.add_argument("--burst", action="store_true", help="process what is queued, then exit")
        worker.set_defaults(handler=_worker, service=name)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(handler=_migrate)

    seed = sub.add_parser("seed", help="generate a synthetic CRM (fixed random seed)")
    seed.add_argument("--leads", type=int, required=True)
    seed.add_argument("--organization-id", type=int, default=None, help="add to this organisation (else a new one)")
    seed.add_argument("--random-seed", type=int, default=42)
    seed.set_defaults(handler=_seed)

    org = sub.add_parser("create-org", help="create an organisation and its first user; prints the API key once")
    org.add_argument("--name", required=True)
    org.add_argument("--email", required=True, help="the first user's email address")
    org.add_argument("--first-name", default="")
    org.add_argument("--last-name", default="")
    org.set_defaults(handler=_create_org)

    user = sub.add_parser("create-user", help="add a user who signs in to the web app")
    user.add_argument("--email", required=True)
    user.add_argument("--name", default="", help="full name, shown in the app")
    user.add_argument("--password", default=None, help="at least 8 characters; asked for when left out")
    user.add_argument("--org", required=True, help="the organisation: its id or its exact name")
    user.set_defaults(handler=_create_user)

    rotate = sub.add_parser("rotate-secrets", help="re-encrypt stored passwords with the current secret key")
    rotate.set_defaults(handler=_rotate_secrets)

    label = sub.add_parser("account-label", help="the account_id label an email account's metrics carry")
    label.add_argument("account_id", type=int)
    label.set_defaults(handler=_account_label)

    sub.add_parser("explain", help='show how a search query parses and compiles: bulkmail explain "status:potential"')
    return parser


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from bulkmail.embedded import run_embedded

    asyncio.run(run_embedded(settings, demo_leads=args.demo_leads))
    return 0


def _query_api(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from bulkmail.query_api.app import create_app
    from bulkmail.shared.metrics import start_metrics_server, use_label_key

    # Metrics on their own port, never on the public API port.
    use_label_key(settings.encryption_keys()[0])
    start_metrics_server(settings.metrics_port)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=25
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from bulkmail.shared.metrics import start_metrics_server, use_label_key
    from bulkmail.shared.worker import Worker, check_heartbeat

    if args.check:
        return 0 if check_heartbeat(settings, args.service) else 1
    if args.service == "dispatcher":
        from bulkmail.dispatcher.worker import DispatcherWorker

        worker: Worker = DispatcherWorker(settings)
    else:
        from bulkmail.mailer.worker import MailerWorker

        worker = MailerWorker(settings)
    use_label_key(settings.encryption_keys()[0])
    if args.burst:
        event_loop.run(worker.run_burst())
        return 0
    start_metrics_server(settings.metrics_port)
    event_loop.run(worker.run())
    return 0


def _account_label(settings: Settings, args: argparse.Namespace) -> int:
    from bulkmail.shared.metrics import account_label, use_label_key

    use_label_key(settings.encryption_keys()[0])
    print(account_label(args.account_id))
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from bulkmail.shared.migrate import upgrade

    upgrade(settings)
    print("database schema is up to date")
    return 0


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from bulkmail.shared.db import Database
    from bulkmail.shared.seed import seed

    async def go() -> None:
        database = Database(settings)
        try:
            report = await seed(
                database, leads=args.leads, organization_id=args.organization_id, random_seed=args.random_seed
            )
        finally:
            await database.dispose()
        rows = ", ".join(f"{table}={n:,}" for table, n in sorted(report.rows.items()))
        print(
            f"seeded {report.leads:,} leads into organisation {report.organization_id} in "
            f"{report.elapsed_seconds:.1f} s "
            f"(generate {report.generate_seconds:.1f} s, load {report.load_seconds:.1f} s)"
        )
        print(rows)

    asyncio.run(go())
    return 0


def _create_org(settings: Settings, args: argparse.Namespace) -> int:
    from bulkmail.shared.db import Database
    from bulkmail.shared.organizations import create_organization

    async def go() -> None:
        database = Database(settings)
        try:
            async with database.session() as session:
                new = await create_organization(
                    session, args.name, user_email=args.email, first_name=args.first_name, last_name=args.last_name
                )
        finally:
            await database.dispose()
        print(f"organisation {new.organization_id}, user {new.user_id}")
        print(f"API key (shown once): {new.api_key}")

    asyncio.run(go())
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from sqlalchemy import select

    from bulkmail.query_api.users.service import UserError, create_user
    from bulkmail.shared.db import Database
    from bulkmail.shared.models import Organization

    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("bulkmail: the passwords differ", file=sys.stderr)
            return 2

    async def go() -> int:
        database = Database(settings)
        try:
            async with database.session() as session:
                where = Organization.id == int(args.org) if args.org.isdigit() else Organization.name == args.org
                org_ids = list(await session.scalars(select(Organization.id).where(where)))
                if len(org_ids) != 1:
                    found = "no" if not org_ids else "more than one"
                    print(f"bulkmail: {found} organisation matches --org {args.org!r}", file=sys.stderr)
                    return 2
                user = await create_user(
                    session, organization_id=org_ids[0], email=args.email, name=args.name, password=password
                )
                print(f"user {user.id} ({user.email}) can now sign in to organisation {org_ids[0]}")
                return 0
        except UserError as exc:
            print(f"bulkmail: {exc}", file=sys.stderr)
            return 2
        finally:
            await database.dispose()

    return asyncio.run(go())


def _rotate_secrets(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from bulkmail.shared.db import Database
    from bulkmail.shared.models import EmailAccount
    from bulkmail.shared.secrets import SecretBox

    async def go() -> int:
        box = SecretBox.from_settings(settings)
        database = Database(settings)
        n = 0
        try:
            async with database.session() as session:
                for account in await session.scalars(select(EmailAccount).with_for_update()):
                    for column in ("smtp_password_encrypted", "imap_password_encrypted"):
                        token = getattr(account, column)
                        if token:
                            setattr(account, column, box.rotate(token))
                            n += 1
        finally:
            await database.dispose()
        return n

    print(f"re-encrypted {asyncio.run(go())} stored passwords with the current key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
