"""make chaos: the infrastructure fails in the middle of a send, and nothing is lost or doubled.

Each fault gets its own run on the real servers: PostgreSQL, RabbitMQ, Postfix's smtp-sink (the
SMTP server; its dump files are the witness of what was received) and a throwaway Dovecot (the
IMAP Sent folder). The API, the dispatcher and two mailers run as separate processes. A send to
every recipient (20,000 by default, Sent copies on) starts; once a quarter is sent the fault
strikes; nothing is restarted by hand except a process killed on purpose. After each run:

- every recipient is in a final state and the bulk email is ``done``;
- no address was received twice (smtp-sink's dump files);
- nothing lost: every recipient recorded as sent arrived, everything that arrived is recorded
  as sent or as ``unknown`` (the outcome the crash hid), ``unknown`` within the in-flight bound;
- every sent message's copy is in the Sent folder exactly once.

    make chaos                                   # every fault, 20,000 recipients each
    make chaos FAULT=smtp-down RECIPIENTS=2000   # one fault, a smaller send (development)

It prints a table and writes it to benchmarks/chaos.txt. Each run starts a PostgreSQL cluster
and a RabbitMQ node of its own (``private_servers``) and tears them down at the end: the
machine's shared servers on 5432 and 5672 are never stopped, restarted or killed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.private_servers import PrivatePostgres, PrivateRabbitMQ  # noqa: E402
from bulkmail.mailer.sender import CLAIM_PER_CONNECTION  # noqa: E402
from bulkmail.shared.db import Database  # noqa: E402
from bulkmail.shared.migrate import upgrade_async  # noqa: E402
from bulkmail.shared.settings import Settings  # noqa: E402
from tests.data import add_audience  # noqa: E402
from tests.e2e.processes import Service, service_env  # noqa: E402
from tests.mail_servers import (  # noqa: E402
    HOST,
    _drop_privileges,
    _wait_listening,
    free_port,
    server_dir,
    start_dovecot,
    stop_process,
)

KEY = "u3Vq0fK9xU1M2a6bq8d6u0xk7zH2r3s4t5v6w7x8y9A="
MAILERS = 2
SMTP_CONNECTIONS = 10
MAILER_PREFETCH = Settings().mailer_prefetch
# What the mailers can have claimed (marked `sending`) without a recorded outcome at one moment:
# the most a single fault can leave `unknown`.
IN_FLIGHT_BOUND = MAILERS * MAILER_PREFETCH * SMTP_CONNECTIONS * CLAIM_PER_CONNECTION
DOMAIN = "chaos.example"
# Copies whose SentCopy message a killed mailer never published wait for the sweep's "lost"
# (SentCopyRetry.lost, 10 minutes); a killed copier's claims for their lease (90 s).
COPIES_TIMEOUT_S = 15 * 60
# Three attempts in a row that cannot reach the SMTP server pause the account for 15 minutes
# (docs/ledger.md, "Accounts that cannot send"): smtp-down's sending resumes only after that.
RECOVERY_TIMEOUT_S = 20 * 60
FAULTS = (
    "none",
    "smtp-down",
    "smtp-stall",
    "dovecot-down",
    "kill-processes",
    "postgres-restart",
    "rabbitmq-stop",
    "rabbitmq-kill",
)
DESCRIPTIONS = {
    "none": "no fault (the reference run)",
    "rabbitmq-stop": "RabbitMQ stopped 20 s (rabbitmqctl stop_app), started again",
    "postgres-restart": "PostgreSQL restarted with -m immediate",
    "smtp-down": "SMTP server gone 60 s (connections refused), then back",
    "smtp-stall": "SMTP server accepts, then stalls mid-DATA for 45 s",
    "dovecot-down": "Dovecot (IMAP) gone 60 s, then back",
    "kill-processes": "API, dispatcher and both mailers each SIGKILLed at a random moment",
    "rabbitmq-kill": "RabbitMQ's node SIGKILLed, restarted (rabbitmq-server -detached)",
}


def log(message: str) -> None:
    print(f"{dt.datetime.now().strftime('%H:%M:%S')} {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# The servers a run owns: smtp-sink (on a fixed port, restartable), Dovecot, a stalling proxy


class Sink:
    """Postfix smtp-sink dumping every transaction into ``dump_dir``; stop and start it on the same port."""

    def __init__(self, dump_dir: Path) -> None:
        self.port = free_port()
        self.dump_dir = dump_dir
        dump_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(dump_dir, 0o1777)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [binary, *user, "-d", f"{self.dump_dir}/%H%M%S.", f"{HOST}:{self.port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_listening(self.proc, [self.port], "smtp-sink", None)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def received(self) -> Counter[str]:
        """Every envelope recipient of every transaction smtp-sink completed, with its count."""
        counts: Counter[str] = Counter()
        for path in self.dump_dir.iterdir():
            head = path.read_bytes()[:4096].decode(errors="replace")
            counts.update(m.lower() for m in re.findall(r"^X-Rcpt-Args: <([^>]+)>", head, re.MULTILINE))
        return counts


class StallingProxy:
    """Forwards to the sink; while ``stalling``, a connection goes silent in the middle of DATA:
    the command and half the first piece of the message go through, then nothing more either
    way, and the connection stays open (a hung server, as the client sees it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.stalling = False
        self.stalled = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0.1)  # the connections' tasks see the abort and end

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, server_w}
        hung = asyncio.Event()

        async def upstream() -> None:
            in_data = False
            while data := await client_r.read(65536):
                if hung.is_set():
                    continue  # swallowed: the server never hears the rest
                if self.stalling and in_data:
                    server_w.write(data[: len(data) // 2])
                    hung.set()
                    self.stalled += 1
                    continue
                if self.stalling and re.search(rb"(^|\r\n)DATA\r\n", data):
                    in_data = True
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if hung.is_set():
                    continue
                client_w.write(data)
                await client_w.drain()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            client_w.transport.abort()
            server_w.transport.abort()
            self._writers -= {client_w, server_w}


def restart_dovecot(dovecot_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """Dovecot again from the same configuration: the same port, the same mailboxes."""
    with open(dovecot_dir / "stderr.log", "ab") as stderr:
        proc = subprocess.Popen(
            [*_drop_privileges(), "dovecot", "-F", "-c", str(dovecot_dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    _wait_listening(proc, [port], "dovecot", dovecot_dir / "dovecot.log")
    return proc


def sent_copies(dovecot_dir: Path) -> Counter[str]:
    """Message-IDs in alice's Sent folder, with how many copies of each."""
    counts: Counter[str] = Counter()
    base = dovecot_dir / "home" / "alice" / "Maildir" / ".Sent"
    for sub in ("cur", "new"):
        folder = base / sub
        if not folder.exists():
            continue
        for path in folder.iterdir():
            head = path.read_bytes()[:8192].decode(errors="replace")
            match = re.search(r"^Message-ID:\s*(<[^>]+>)", head, re.MULTILINE | re.IGNORECASE)
            if match:
                counts[match.group(1)] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# One run


@dataclass
class Result:
    fault: str
    recipients: int
    recover_s: float | None = None
    states: Counter[str] = field(default_factory=Counter)
    doubled: int = 0
    lost: int = 0
    copies_missing: int = 0
    copies_doubled: int = 0
    status: str = ""
    seen_down: str = ""
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.status == "done"
            and self.doubled == 0
            and self.lost == 0
            and self.states["unknown"] <= IN_FLIGHT_BOUND
            and self.copies_missing == 0
            and self.copies_doubled == 0
            and all(self.states[s] == 0 for s in ("pending", "sending", "deferred"))
        )


class Run:
    def __init__(self, fault: str, recipients: int, workdir: Path) -> None:
        self.fault = fault
        self.recipients = recipients
        self.workdir = workdir
        self.result = Result(fault, recipients)
        self.services: dict[str, Service] = {}
        self.api_port = free_port()
        self.metrics_ports = {f"mailer-{i}": free_port() for i in range(MAILERS)}
        self.progress: list[tuple[float, int, int]] = []  # (time, sent, copies appended)
        self.down_seen: set[str] = set()

    # -- processes ---------------------------------------------------------------------------

    def _service(self, name: str) -> Service:
        command = "mailer" if name.startswith("mailer") else name
        extra = {"BULKMAIL_PORT": str(self.api_port), "BULKMAIL_HOST": HOST}
        if name in self.metrics_ports:
            extra["BULKMAIL_METRICS_PORT"] = str(self.metrics_ports[name])
        service = Service(command, service_env(self.settings, **extra), self.workdir)
        service.log_path = self.workdir / f"{name}.log"
        return service

    def start_service(self, name: str) -> None:
        self.services[name] = self._service(name).start()

    async def wait_started(self, names: list[str], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                pending = [n for n in names if not await self._started(client, n)]
                if not pending:
                    return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{names} did not start within {timeout} s")

    async def _started(self, client: httpx.AsyncClient, name: str) -> bool:
        if name == "query-api":
            try:
                return (await client.get(f"http://{HOST}:{self.api_port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False
        log_text = self.services[name].log_path.read_text(errors="replace")
        # Only the lines written since the latest start count.
        return log_text.rfind('"worker started"') > log_text.rfind('"__restart__"')

    def kill(self, name: str) -> None:
        service = self.services[name]
        service.kill9()
        with open(service.log_path, "a") as f:
            f.write('{"event": "__restart__"}\n')

    # -- the run -----------------------------------------------------------------------------

    async def execute(self) -> Result:
        started = time.monotonic()
        self.postgres = PrivatePostgres(self.workdir / "postgres")
        self.rabbitmq = PrivateRabbitMQ(self.workdir / "rabbitmq")
        self.sink = Sink(self.workdir / "sink")
        self.dovecot_dir = server_dir("chaos-dovecot")
        self.proxy: StallingProxy | None = None
        try:
            await self._start_servers()
            await self._run()
        except Exception as exc:
            self.result.notes.append(f"run failed: {exc!r}")
            log(f"{self.fault}: run failed: {exc!r}")
        finally:
            self.result.elapsed_s = time.monotonic() - started
            await self._teardown()
        return self.result

    async def _start_servers(self) -> None:
        await asyncio.gather(self.postgres.start(), self.rabbitmq.start())
        admin = await asyncpg.connect(self.postgres.admin_url)
        await admin.execute('CREATE DATABASE "bulkmail"')
        await admin.close()
        self.dsn = self.postgres.admin_url.rsplit("/", 1)[0] + "/bulkmail"
        self.settings = Settings(
            database_url=self.dsn.replace("postgresql://", "postgresql+asyncpg://"),
            amqp_url=self.rabbitmq.url,
            broker_namespace="chaos",
            secret_key=KEY,
            data_dir=self.workdir,
            public_url="https://bulkmail.example.test",
            sweep_interval_s=1.0,
            chunk_timeout_s=120.0,
        )

    async def _run(self) -> None:
        await upgrade_async(self.settings)
        database = Database(self.settings)
        try:
            _, api_key = await add_audience(database, self.recipients, domain=DOMAIN)
        finally:
            await database.dispose()
        self.sink.start()
        dovecot = start_dovecot(self.dovecot_dir)
        self.dovecot_port = dovecot.port
        self.dovecot_proc = dovecot.proc
        smtp_port = self.sink.port
        if self.fault == "smtp-stall":
            self.proxy = StallingProxy(self.sink.port)
            await self.proxy.start()
            smtp_port = self.proxy.port
        names = ["query-api", "dispatcher", *self.metrics_ports]
        for name in names:
            self.start_service(name)
        await self.wait_started(names)
        self.bulk_id = await self._create_send(api_key, smtp_port)
        log(f"{self.fault}: bulk email {self.bulk_id} created, {self.recipients:,} recipients")
        watcher = asyncio.create_task(self._watch())
        try:
            created = time.monotonic()
            await self._inject()
            await self._wait_done(timeout=RECOVERY_TIMEOUT_S + 600)
            log(f"{self.fault}: done {time.monotonic() - created:.0f} s after create")
            await self._wait_copies(timeout=COPIES_TIMEOUT_S)
            log(f"{self.fault}: Sent copies settled {time.monotonic() - created:.0f} s after create")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await self._check()

    async def _create_send(self, api_key: str, smtp_port: int) -> int:
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{self.api_port}", headers={"Authorization": f"Bearer {api_key}"}, timeout=60
        ) as api:
            template = await api.post(
                "/api/v1/email_template/",
                json={
                    "name": "Chaos",
                    "subject": "Hello {{ lead.display_name }}",
                    "body": "<p>Hi {{ contact.first_name }}</p>" * 20,
                },
            )
            template.raise_for_status()
            account = await api.post(
                "/api/v1/email_account/",
                json={
                    "email": "alice@chaos.example",
                    "smtp_host": HOST,
                    "smtp_port": smtp_port,
                    "smtp_security": "none",
                    "max_connections": SMTP_CONNECTIONS,
                    "imap_host": HOST,
                    "imap_port": self.dovecot_port,
                    "imap_security": "none",
                    "imap_username": "alice",
                    "imap_password": "alicepw",
                    "sent_copy_mode": "always",
                },
            )
            account.raise_for_status()
            created = await api.post(
                "/api/v1/bulk_action/email/",
                json={
                    "query": "*",
                    "template_id": template.json()["id"],
                    "email_account_id": account.json()["id"],
                    "send_done_email": False,
                },
            )
            created.raise_for_status()
            return int(created.json()["id"])

    # -- watching ----------------------------------------------------------------------------

    async def _query(self, sql: str, patience: float = 120) -> list[asyncpg.Record]:
        """One query on a fresh connection, tried again while PostgreSQL restarts."""
        deadline = time.monotonic() + patience
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                try:
                    return await conn.fetch(sql, self.bulk_id)
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)

    async def _watch(self) -> None:
        """Progress every half second, and whether /readyz and the mailers' metrics show a dependency down."""
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                try:
                    rows = await self._query(
                        "SELECT count(*) FILTER (WHERE state = 'sent') AS sent,"
                        " count(*) FILTER (WHERE sent_copy_state = 'appended') AS copies"
                        " FROM recipients WHERE bulk_email_id = $1",
                        patience=0,
                    )
                    self.progress.append((time.monotonic(), rows[0]["sent"], rows[0]["copies"]))
                except Exception:
                    pass  # the database is what is down
                try:
                    ready = await client.get(f"http://{HOST}:{self.api_port}/readyz")
                    if ready.status_code == 503:
                        self.down_seen.update(f"readyz:{k}" for k in ready.json() if k != "status")
                except (httpx.HTTPError, ValueError):
                    pass
                for name, port in self.metrics_ports.items():
                    try:
                        text = (await client.get(f"http://{HOST}:{port}/metrics")).text
                    except httpx.HTTPError:
                        continue
                    for dep in re.findall(r'^bulkmail_dependency_up\{dependency="(\w+)"\} 0\.0$', text, re.MULTILINE):
                        self.down_seen.add(f"{name}:{dep}")
                await asyncio.sleep(0.5)

    def _now_sent(self) -> int:
        return self.progress[-1][1] if self.progress else 0

    async def _until_sent(self, fraction: float, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self._now_sent() < self.recipients * fraction:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not {fraction:.0%} sent within {timeout} s")
            await asyncio.sleep(0.2)

    async def _recovered_after(self, moment: float, column: int = 1, timeout: float = RECOVERY_TIMEOUT_S) -> float:
        """Seconds from ``moment`` until the progress column (1 sent, 2 copies) grew past its value then."""
        deadline = time.monotonic() + timeout
        base = None
        while time.monotonic() < deadline:
            samples = [p for p in self.progress if p[0] >= moment]
            if samples:
                base = samples[0][column] if base is None else base
                for p in samples:
                    if p[column] > base:
                        return p[0] - moment
                if await self._nothing_left(column):
                    return samples[0][0] - moment  # nothing was left to make progress on
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no progress within {timeout} s after the fault")

    async def _nothing_left(self, column: int) -> bool:
        """Every recipient final (column 1), or every sent message's copy appended (column 2)."""
        if column == 1:
            sql = (
                "SELECT count(*) AS n FROM recipients WHERE bulk_email_id = $1"
                " AND state IN ('pending', 'sending', 'deferred')"
            )
        else:
            sql = (
                "SELECT count(*) AS n FROM recipients WHERE bulk_email_id = $1 AND state = 'sent'"
                " AND sent_copy_state IS DISTINCT FROM 'appended'"
            )
        return bool((await self._query(sql))[0]["n"] == 0)

    # -- faults ------------------------------------------------------------------------------

    async def _inject(self) -> None:
        fault = self.fault
        if fault == "none":
            return
        if fault == "kill-processes":
            await self._kill_processes()
            return
        await self._until_sent(0.25)
        log(f"{fault}: striking at {self._now_sent():,} sent")
        column = 1
        if fault == "rabbitmq-stop":
            await self.rabbitmq.stop_app()
            await asyncio.sleep(20)
            await self.rabbitmq.start_app()
        elif fault == "rabbitmq-kill":
            await self.rabbitmq.kill_and_restart()
        elif fault == "postgres-restart":
            await self.postgres.restart_immediate()
        elif fault == "smtp-down":
            self.sink.stop()
            await asyncio.sleep(60)
            self.sink.start()
        elif fault == "smtp-stall":
            assert self.proxy is not None
            self.proxy.stalling = True
            await asyncio.sleep(45)
            self.proxy.stalling = False
            self.result.notes.append(f"{self.proxy.stalled} connections hung mid-DATA")
        elif fault == "dovecot-down":
            stop_process(self.dovecot_proc)
            await asyncio.sleep(60)
            self.dovecot_proc = restart_dovecot(self.dovecot_dir, self.dovecot_port)
            column = 2
        restored = time.monotonic()
        log(f"{fault}: restored at {self._now_sent():,} sent")
        self.result.recover_s = await self._recovered_after(restored, column)

    async def _kill_processes(self) -> None:
        victims = ["query-api", "dispatcher", *self.metrics_ports]
        random.shuffle(victims)
        moments = sorted(random.uniform(0.1, 0.8) for _ in victims)
        recoveries = []
        for name, fraction in zip(victims, moments, strict=True):
            await self._until_sent(fraction)
            log(f"kill -9 {name} at {self._now_sent():,} sent")
            killed_at = time.monotonic()
            self.kill(name)
            self.start_service(name)
            await self.wait_started([name])
            back = time.monotonic() - killed_at
            recoveries.append(max(back, await self._recovered_after(killed_at)))
            self.result.notes.append(f"{name} killed at {fraction:.0%}, back in {back:.1f} s")
        self.result.recover_s = max(recoveries)

    # -- the end -----------------------------------------------------------------------------

    async def _wait_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rows = await self._query("SELECT status FROM bulk_emails WHERE id = $1")
                if rows and rows[0]["status"] in ("done", "error", "cancelled"):
                    return
            except Exception:
                pass
            await asyncio.sleep(1)
        raise RuntimeError(f"the bulk email did not finish within {timeout} s")

    async def _wait_copies(self, timeout: float) -> None:
        """Sent copies lag the sending (their own queue; failed ones are retried with backoff)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = await self._query(
                "SELECT count(*) AS n FROM recipients WHERE bulk_email_id = $1 AND state = 'sent'"
                " AND sent_copy_state IS DISTINCT FROM 'appended'"
            )
            if rows[0]["n"] == 0:
                return
            await asyncio.sleep(2)
        self.result.notes.append(f"Sent copies not all appended within {timeout} s")

    def _rates(self) -> list[str]:
        """Sending and copying speed over the run, from the progress samples (both include the fault)."""
        lines = []
        for column, what in ((1, "sent"), (2, "Sent copies")):
            moving = [p for p in self.progress if p[column] > 0]
            if len(moving) < 2:
                continue
            top = max(p[column] for p in moving)
            done_at = next(p[0] for p in moving if p[column] == top)
            span = done_at - moving[0][0]
            if span > 0:
                lines.append(f"{what}: {top:,} in {span:.0f} s from the first, {top / span:.0f}/s")
        return lines

    async def _check(self) -> None:
        r = self.result
        status = await self._query("SELECT status FROM bulk_emails WHERE id = $1")
        r.status = str(status[0]["status"])
        rows = await self._query(
            "SELECT lower(email) AS email, state, message_id, sent_copy_state FROM recipients WHERE bulk_email_id = $1"
        )
        r.states = Counter(str(row["state"]) for row in rows)
        received = self.sink.received()
        r.doubled = sum(1 for n in received.values() if n > 1)
        sent = {row["email"] for row in rows if row["state"] == "sent"}
        unknown = {row["email"] for row in rows if row["state"] == "unknown"}
        never_arrived = sent - set(received)
        unaccounted = set(received) - sent - unknown
        not_final = sum(1 for row in rows if row["state"] in ("pending", "sending", "deferred"))
        r.lost = len(never_arrived) + len(unaccounted) + not_final
        copies = sent_copies(self.dovecot_dir)
        wanted = {row["message_id"] for row in rows if row["state"] == "sent"}
        r.copies_missing = len(wanted - set(copies))
        r.copies_doubled = sum(1 for mid, n in copies.items() if n > 1)
        r.seen_down = ", ".join(sorted(self.down_seen)) or "-"
        r.notes.extend(self._rates())
        if r.states["unknown"]:
            r.notes.append(f"{len(unknown & set(received))} of the unknown arrived")

    async def _teardown(self) -> None:
        for service in self.services.values():
            if service.proc and service.proc.poll() is None:
                try:
                    service.stop(timeout=30)
                except subprocess.TimeoutExpired:
                    self.result.notes.append(f"{service.log_path.stem} did not stop on SIGTERM within 30 s")
        if self.proxy is not None:
            await self.proxy.stop()
        self.sink.stop()
        if getattr(self, "dovecot_proc", None) is not None:
            stop_process(self.dovecot_proc)
        shutil.rmtree(self.dovecot_dir, ignore_errors=True)
        shutil.rmtree(self.sink.dump_dir, ignore_errors=True)
        for server in (self.rabbitmq, self.postgres):
            try:
                await server.stop()
            except Exception as exc:
                self.result.notes.append(f"stopping {type(server).__name__} failed: {exc!r}")


# ---------------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    header = (
        f"{'fault':<17} {'recover':>8} {'sent':>7} {'unknown':>7} {'doubled':>7} {'lost':>5} "
        f"{'copies ok':>9} {'status':>7} {'run':>6}  outage seen in /readyz and metrics"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        recover = f"{r.recover_s:.1f} s" if r.recover_s is not None else "-"
        copies = "yes" if r.copies_missing == r.copies_doubled == 0 else f"{r.copies_missing}m/{r.copies_doubled}d"
        lines.append(
            f"{r.fault:<17} {recover:>8} {r.states['sent']:>7,} {r.states['unknown']:>7,} {r.doubled:>7} "
            f"{r.lost:>5} {copies:>9} {r.status or '-':>7} {r.elapsed_s:>5.0f}s  {r.seen_down}"
        )
    lines.append("")
    for r in results:
        lines.append(f"{r.fault}: {DESCRIPTIONS[r.fault]}. {'PASS' if r.ok else 'FAIL'}")
        lines.extend(f"    {note}" for note in r.notes)
    return "\n".join(lines)


def _keep_logs(fault: str, workdir: Path) -> Path:
    keep = Path(tempfile.mkdtemp(prefix=f"chaos-logs-{fault}-"))
    for log_file in workdir.glob("*.log"):
        shutil.copy(log_file, keep)
    return keep


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--fault",
        default="",
        help=f"one or more (comma-separated) of {', '.join(FAULTS)} (default: all but none, in that order)",
    )
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs of passing runs too")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "chaos.txt")
    args = parser.parse_args()
    # "none" (a reference run with no fault) only when asked for by name.
    faults = args.fault.split(",") if args.fault else [f for f in FAULTS if f != "none"]
    unknown_faults = [f for f in faults if f not in FAULTS]
    if unknown_faults:
        parser.error(f"unknown fault {unknown_faults[0]!r}; choose from {', '.join(FAULTS)}")
    results = []
    started = dt.datetime.now(dt.UTC)
    for fault in faults:
        with tempfile.TemporaryDirectory(prefix=f"chaos-{fault}-") as tmp:
            workdir = Path(tmp)
            os.chmod(workdir, 0o755)
            result = await Run(fault, args.recipients, workdir).execute()
            if not result.ok or args.keep_logs:
                result.notes.append(f"service logs kept in {_keep_logs(fault, workdir)}")
        results.append(result)
        log(f"{fault}: {'PASS' if result.ok else 'FAIL'} {dict(result.states)}\n" + table([result]))
    report = (
        f"make chaos, {started:%Y-%m-%d %H:%M} UTC: {args.recipients:,} recipients per run, "
        f"{MAILERS} mailers x {SMTP_CONNECTIONS} SMTP connections, Sent copies on; "
        f"in-flight bound {IN_FLIGHT_BOUND}; machine: {os.cpu_count()} cores, shared\n"
        "recover: from the fault's end (a killed process: from the kill) until sending (dovecot: "
        "copying) makes progress again\n\n" + table(results) + "\n"
    )
    print("\n" + report)
    if (args.fault == "" and args.recipients == 20_000) or args.output != parser.get_default("output"):
        args.output.write_text(report)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
