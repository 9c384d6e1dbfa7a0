"""Real mail servers for tests: Postfix ``smtp-sink`` and a throwaway rootless Dovecot, on loopback.

Each server is started on a port nothing else listens on, waited for with a bounded wait, and
stopped by its own PID (never by name): several test runs and developers share the machine.
As root the servers drop to ``nobody`` (smtp-sink insists on ``-u``; Dovecot refuses to run its
login processes as root). Needs the Debian packages ``postfix`` (for smtp-sink) and ``dovecot-imapd``.

Use from a test module::

    pytest_plugins = ["tests.mail_servers"]

which provides the fixtures below, or call :func:`start_dovecot` / :func:`start_smtp_sink` directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
USERS = {"alice": "alicepw", "bob": "bobpw"}
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------------
# Ports and processes


def port_is_listening(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port that nothing listens on right now (the kernel's pick, then double-checked)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if not port_is_listening(port):
            return port
    raise RuntimeError("no free loopback port found")


def _drop_privileges() -> list[str]:
    # Only root needs (and may use) setpriv; a developer's own user runs the servers as itself.
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:port (from /proc/net/tcp, state 0A = LISTEN)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return {row[9] for row in rows if row[1] == wanted and row[3] == "0A"}


def _owns_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the listening socket: not some other program."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    return any(f"socket:[{inode}]" in links for inode in inodes)


def _wait_listening(proc: subprocess.Popen[bytes], ports: list[int], what: str, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logs = [log, log.with_name("stderr.log")] if log else []
            detail = "".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up\n{detail}")
        if all(_owns_listener(proc.pid, p) for p in ports):
            return
        time.sleep(0.05)
    stop_process(proc)
    raise RuntimeError(f"{what} (pid {proc.pid}) did not listen on {ports} within {START_TIMEOUT}s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM this process (by PID), wait a bounded time, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _check_port_free(port: int) -> None:
    if port_is_listening(port):
        raise RuntimeError(f"something else already listens on {HOST}:{port}")


# ---------------------------------------------------------------------------------------------
# Dovecot


@dataclass
class Dovecot:
    """A running throwaway Dovecot: plaintext IMAP on ``port``, implicit TLS on ``imaps_port``."""

    dir: Path
    port: int
    sent_box: str
    proc: subprocess.Popen[bytes]
    imaps_port: int | None = None
    cafile: Path | None = None
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def maildir(self, user: str, box: str) -> Path:
        """Where Dovecot keeps ``box`` (maildir++ layout with '/' as the IMAP separator)."""
        root = self.dir / "home" / user / "Maildir"
        return root if box.upper() == "INBOX" else root / ("." + box.replace("/", "."))

    def message_files(self, user: str, box: str) -> list[Path]:
        base = self.maildir(user, box)
        return sorted(p for sub in ("cur", "new") if (base / sub).exists() for p in (base / sub).iterdir())

    def count_with_header(self, user: str, box: str, needle: bytes) -> int:
        return sum(1 for p in self.message_files(user, box) if needle in p.read_bytes())

    def reset_mailboxes(self) -> None:
        """Empty every user's mail, so tests sharing a server start from nothing."""
        shutil.rmtree(self.dir / "home", ignore_errors=True)
        (self.dir / "home").mkdir()
        _chown_nobody(self.dir / "home")

    def stop(self) -> None:
        stop_process(self.proc)


def _chown_nobody(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "nobody", "nogroup")


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1/localhost, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for p in (cert_path, key_path):
        os.chmod(p, 0o600)
        _chown_nobody(p)
    return cert_path, key_path


def _dovecot_conf(
    d: Path, port: int, sent_box: str, sent_flag: str, imaps_port: int | None, cert: tuple[Path, Path] | None
) -> str:
    user = "nobody" if os.geteuid() == 0 else _whoami()[0]
    group = "nogroup" if os.geteuid() == 0 else _whoami()[1]
    special_use = f"special_use = {sent_flag}" if sent_flag else ""
    ssl_block = f"ssl = yes\nssl_cert = <{cert[0]}\nssl_key = <{cert[1]}" if cert else "ssl = no"
    imaps = f"address = {HOST}\n    port = {imaps_port}" if imaps_port else "port = 0"
    return f"""
instance_name = dovecot-test-{port}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = {HOST}
{ssl_block}
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/dovecot.log
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 0
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service auth-worker {{
  user = $default_internal_user
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {d}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={d}/home/%n
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
  mailbox "{sent_box}" {{
    {special_use}
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
"""


def _whoami() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def start_dovecot(
    directory: Path,
    *,
    sent_box: str = "Sent",
    sent_flag: str = "\\Sent",
    tls: bool = False,
    capabilities: str = "",
) -> Dovecot:
    """Start Dovecot in the foreground (its PID is ours to stop) with users alice and bob.

    ``sent_flag=""`` makes a Sent box without the special-use attribute (tests the name fallback).
    """
    if shutil.which("dovecot") is None:
        raise RuntimeError("dovecot is not installed: apt-get install -y dovecot-imapd")
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("run", "state", "home"):
        (directory / sub).mkdir(exist_ok=True)
    (directory / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in USERS.items()))
    port = free_port()
    imaps_port = free_port() if tls else None
    cert = make_self_signed_cert(directory) if tls else None
    conf = _dovecot_conf(directory, port, sent_box, sent_flag, imaps_port, cert)
    if capabilities:  # extra CAPABILITY words after login, e.g. Gmail's X-GM-EXT-1
        conf += f"imap_capability = +{capabilities}\n"
    (directory / "dovecot.conf").write_text(conf)
    if os.geteuid() == 0:
        for path in [directory, *directory.rglob("*")]:
            _chown_nobody(path)
    ports = [port] + ([imaps_port] if imaps_port else [])
    for p in ports:
        _check_port_free(p)
    with open(directory / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            [*_drop_privileges(), "dovecot", "-F", "-c", str(directory / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    _wait_listening(proc, ports, "dovecot", directory / "dovecot.log")
    return Dovecot(
        dir=directory,
        port=port,
        sent_box=sent_box,
        proc=proc,
        imaps_port=imaps_port,
        cafile=cert[0] if cert else None,
    )


# ---------------------------------------------------------------------------------------------
# Postfix smtp-sink


@dataclass
class SmtpSink:
    port: int
    proc: subprocess.Popen[bytes]
    dump_dir: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def captured(self) -> list[Path]:
        return sorted(self.dump_dir.iterdir()) if self.dump_dir else []

    def stop(self) -> None:
        stop_process(self.proc)


def start_smtp_sink(*options: str, dump_dir: Path | None = None) -> SmtpSink:
    """Start ``smtp-sink`` with fault options, e.g. ``start_smtp_sink("-r", "RCPT")``.

    Faults (smtp-sink(1)): ``-r CMD`` soft 4xx (text via ``-b``), ``-f CMD`` hard 5xx (text via
    ``-B``), ``-Q CMD`` 421 and disconnect, ``-q CMD`` disconnect without a reply.
    """
    binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(binary).exists():
        raise RuntimeError("smtp-sink is not installed: apt-get install -y postfix")
    port = free_port()
    _check_port_free(port)
    args = [binary]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    if dump_dir is not None:
        dump_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(dump_dir, 0o1777)
        args += ["-d", f"{dump_dir}/%M."]
    args += [*options, f"{HOST}:{port}", "64"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(proc, [port], "smtp-sink", None)
    return SmtpSink(port=port, proc=proc, dump_dir=dump_dir)


# ---------------------------------------------------------------------------------------------
# Fixtures


def server_dir(prefix: str) -> Path:
    """A fresh directory the servers can use after dropping to ``nobody``.

    Not under pytest's tmp_path: that lives in a root-only (0700) directory nobody cannot enter.
    """
    path = Path(tempfile.mkdtemp(prefix=f"bulkmail-{prefix}-"))
    os.chmod(path, 0o755)
    return path


def _dovecot_fixture(name: str, **kwargs: object) -> Iterator[Dovecot]:
    directory = server_dir(name)
    try:
        server = start_dovecot(directory, **kwargs)  # type: ignore[arg-type]
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., SmtpSink]]:
    """``smtp_sink("-r", "RCPT")`` → a running smtp-sink with those fault options, stopped after the test."""
    sinks: list[SmtpSink] = []

    def make(*options: str, dump_dir: Path | None = None) -> SmtpSink:
        sink = start_smtp_sink(*options, dump_dir=dump_dir)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (for "server down" tests)."""
    return free_port()


@pytest.fixture
async def cutting_proxy() -> AsyncIterator[Callable[[int], Awaitable[CuttingProxy]]]:
    """``await cutting_proxy(target_port)`` → a started :class:`CuttingProxy`, stopped after the test."""
    proxies: list[CuttingProxy] = []

    async def make(target_port: int) -> CuttingProxy:
        proxy = CuttingProxy(target_port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.stop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """Dovecot with a ``Sent`` box marked ``\\Sent``, plaintext and implicit-TLS listeners."""
    yield from _dovecot_fixture("dovecot", tls=True)


@pytest.fixture(scope="session")
def dovecot_unflagged() -> Iterator[Dovecot]:
    """Dovecot whose ``Sent Items`` box has no special-use attribute (older servers)."""
    yield from _dovecot_fixture("dovecot-unflagged", sent_box="Sent Items", sent_flag="")


@pytest.fixture(scope="session")
def dovecot_gmail_layout() -> Iterator[Dovecot]:
    """Dovecot dressed as Gmail: ``[Gmail]/Sent Mail`` marked ``\\Sent``, and ``X-GM-EXT-1`` in CAPABILITY."""
    yield from _dovecot_fixture("dovecot-gmail", sent_box="[Gmail]/Sent Mail", capabilities="X-GM-EXT-1")


# ---------------------------------------------------------------------------------------------
# A TCP proxy that loses connections on cue


class CuttingProxy:
    """Forwards one loopback port to a server and can drop the connection at a chosen moment.

    ``cut_when_client_sends(marker, before_server=True)``: drop as soon as the client sends
    ``marker``, before the server sees it (nothing happened on the server).
    ``cut_when_client_sends(marker, before_server=False)``: forward it, let the server answer,
    and drop that answer (the server did the work; the client never hears of it).
    ``stall_when_client_sends(marker)``: forward it, then keep the connection open but silent
    (a hung server). Runs in the test's event loop.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self.connections = 0
        self._marker: bytes | None = None
        self._before_server = True
        self._stall = False
        self._server: asyncio.base_events.Server | None = None

    def cut_when_client_sends(self, marker: bytes, *, before_server: bool) -> None:
        self._marker, self._before_server, self._stall = marker, before_server, False

    def stall_when_client_sends(self, marker: bytes) -> None:
        self._marker, self._before_server, self._stall = marker, False, True

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
        swallow = asyncio.Event()
        closed = asyncio.Event()

        def close_all() -> None:
            if not closed.is_set():
                closed.set()
                self.cuts += 1
                client_w.close()
                server_w.close()

        async def upstream() -> None:
            seen = b""
            while not closed.is_set() and (data := await client_r.read(65536)):
                seen = (seen + data)[-65536:]
                if self._marker is not None and self._marker in seen:
                    self._marker = None  # one cut per arm
                    if self._before_server:
                        close_all()
                        return
                    swallow.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while not closed.is_set() and (data := await server_r.read(65536)):
                if swallow.is_set():
                    if self._stall:
                        continue  # hung: the client hears nothing more, and nothing closes
                    close_all()  # the server answered; the client must not hear it
                    return
                client_w.write(data)
                await client_w.drain()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (client_w, server_w):
                w.close()
