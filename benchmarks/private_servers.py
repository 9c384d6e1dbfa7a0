"""A PostgreSQL cluster and a RabbitMQ node of make chaos's own, so its faults hit nobody else.

The machine's PostgreSQL (5432) and RabbitMQ (5672) are shared with every test run and
benchmark on it; restarting or killing them mid-send would break those too. Each chaos run
starts its own: a throwaway cluster made with ``initdb`` in a temp directory (run as the
``postgres`` user when started as root) and a RabbitMQ node ``chaos@localhost`` with its own
ports, its own epmd, its own Mnesia and log directories, no plugins (so no management listener),
and a configuration file of its own instead of ``/etc/rabbitmq``'s. Every command that
stops, restarts or kills names that cluster's directory or that node, never the shared ones.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import socket
import time
from pathlib import Path

HOST = "127.0.0.1"
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not the wrapper that su's to rabbitmq
SHARED_PORTS = {5432, 5672, 4369, 25672, 15672}


def free_port(avoid: set[int] = SHARED_PORTS) -> int:
    """A loopback port nothing listens on, outside the shared servers' ports and RabbitMQ's CLI
    distribution range (the shared node's CLI tools take 35672-35682)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port in avoid or 35672 <= port <= 35682:
            continue
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) != 0:
                return port
    raise RuntimeError("no free loopback port found")


async def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {text[-2000:]}")
    return text


# ---------------------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster in ``base``, on a port of its own, trust authentication on loopback."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindir:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(bindir[-1])
        # initdb refuses to run as root: the cluster belongs to the postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> list[str]:
        return [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"), *args]

    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(self.base, "postgres", "postgres")
        initdb = [*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        await _run(*initdb, "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.base} -c listen_addresses={HOST} -c max_connections=200"
        await _run(*self._pg_ctl("-w", "-t", "60", "-o", options, "start"))

    async def restart_immediate(self) -> None:
        """The fault: every backend killed without a checkpoint, then crash recovery on start."""
        await _run(*self._pg_ctl("-w", "-t", "120", "-m", "immediate", "restart"))

    async def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await _run(*self._pg_ctl("-w", "-t", "60", "-m", "immediate", "stop"))


class PrivateRabbitMQ:
    """The RabbitMQ node ``chaos@localhost`` with its data, logs, epmd and ports in ``base``."""

    NODE = "chaos@localhost"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        dist_port = free_port({*SHARED_PORTS, self.port})
        self.epmd_port = free_port({*SHARED_PORTS, self.port, dist_port})
        self.env = {
            **os.environ,
            "HOME": str(base),  # the Erlang cookie the node and rabbitmqctl share
            "RABBITMQ_NODENAME": self.NODE,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/"

    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        # Our own files, so nothing of /etc/rabbitmq (the shared node's listener on 5672) applies.
        (self.base / "rabbitmq.conf").write_text("loopback_users = none\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        await _run(str(RABBITMQ_BIN / "rabbitmq-server"), "-detached", env=self.env)
        await self.await_startup()

    async def ctl(self, *args: str, timeout: float = 120) -> str:
        return await _run(str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.NODE, *args, env=self.env, timeout=timeout)

    async def await_startup(self, timeout: float = 180) -> None:
        # -detached returns before the node has registered with epmd: await_startup fails until it has.
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.ctl("await_startup", "--timeout", "60", timeout=90)
                return
            except (RuntimeError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)

    async def stop_app(self) -> None:
        await self.ctl("stop_app")

    async def start_app(self) -> None:
        await self.ctl("start_app")

    def pid(self) -> int:
        return int((self.base / "rabbitmq.pid").read_text().strip())

    async def kill_and_restart(self) -> None:
        """SIGKILL this node's Erlang VM (its PID file), then start it again detached."""
        os.kill(self.pid(), signal.SIGKILL)
        await asyncio.sleep(2)
        await _run(str(RABBITMQ_BIN / "rabbitmq-server"), "-detached", env=self.env)
        await self.await_startup()

    async def stop(self) -> None:
        try:
            await self.ctl("stop", timeout=60)
        except (RuntimeError, TimeoutError):
            try:
                os.kill(self.pid(), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        # Our own epmd (its port is ours alone). It refuses -kill while the halting node is still
        # registered, which lasts a moment after "rabbitmqctl stop" returns: ask again.
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        for _ in range(40):
            try:
                if "name " not in await _run(epmd, "-port", str(self.epmd_port), "-names", env=self.env, timeout=10):
                    await _run(epmd, "-port", str(self.epmd_port), "-kill", env=self.env, timeout=10)
                    return
            except (RuntimeError, TimeoutError):
                return  # no epmd answers on that port: nothing left to stop
            await asyncio.sleep(0.5)
