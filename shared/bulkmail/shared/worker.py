"""The shape every background service shares: start, consume, stop gracefully, prove it is alive.

A worker owns its database and broker clients. SIGTERM stops new deliveries and lets the
ones in progress finish (their acks come only after their commits). A heartbeat file lets
``bulkmail <service> --check`` (a Kubernetes exec probe) tell a live worker from a stuck one.

Neither a database nor a broker outage stops a worker: the broker adapter reconnects by
itself, and a delivery that failed because the database is unreachable is held (not
redelivered in a loop) while the worker pings the database with backoff until it answers.
Both states are in the metrics (``bulkmail_dependency_up``, ``bulkmail_reconnects``).

Burst mode (``run_burst``, ``run_to_idle``, ``bulkmail <service> --burst``) processes what is
queued, and what that work queues in turn, then returns: for tests, one-off runs and jobs,
instead of polling with deadlines. ``wait_idle`` is the same wait for workers already running.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bulkmail.shared import metrics
from bulkmail.shared.broker import Broker, Delivery, Handler, create_broker
from bulkmail.shared.db import Database, is_database_unavailable
from bulkmail.shared.logging import get_logger
from bulkmail.shared.settings import Settings

log = get_logger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_STALE_S = 60.0
# How long stop waits for the loops to finish their current turn before cancelling them.
LOOP_STOP_TIMEOUT_S = 5.0
# Tries at connecting to the broker and subscribing before a worker gives up at start
# (about a minute and a half with the backoff below: a broker restarting meanwhile is waited for).
START_ATTEMPTS = 12
# Waiting for a lost database: the first ping soon, then twice as far apart up to the cap.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
# How often a worker checks the database while nothing else tells it the database went away.
DATABASE_WATCH_S = 5.0
# Pause before a delivery that failed for another reason goes back on the queue.
REDELIVERY_DELAY_S = 0.5


def heartbeat_path(settings: Settings, service: str) -> Path:
    return settings.data_dir / f"{service}.heartbeat"


def check_heartbeat(settings: Settings, service: str) -> bool:
    path = heartbeat_path(settings, service)
    try:
        return time.time() - path.stat().st_mtime < HEARTBEAT_STALE_S
    except FileNotFoundError:
        return False


BACKLOG_INTERVAL_S = 15.0
# Burst mode: how long everything must stay idle before it counts as done, how often to look,
# and how long a burst may last at most.
BURST_QUIET_S = 0.3
BURST_POLL_S = 0.05
BURST_TIMEOUT_S = 120.0


class BurstTimeout(TimeoutError):
    """Work was still queued or in progress when the burst's time ran out."""


class Worker(abc.ABC):
    """Subclasses implement ``start`` (subscribe, spawn loops); the runtime handles the rest."""

    service = "worker"
    # Work queues whose backlog this service reports as a metric (what autoscaling watches).
    backlog_queues: tuple[str, ...] = ()

    def __init__(self, settings: Settings, database: Database | None = None, broker: Broker | None = None) -> None:
        self.settings = settings
        self._owns_db = database is None
        self._owns_broker = broker is None
        # No pre-ping: it costs a round trip per transaction on the hot path, and a connection
        # that died with the server fails its message, which the broker redelivers.
        self.database = database or Database(settings, pool_pre_ping=False)
        self.broker = broker or create_broker(settings)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._database_back: asyncio.Task[None] | None = None
        # The queues this worker consumes and the deliveries in its hands: what "idle" means.
        self._consumed: list[str] = []
        self._busy = 0

    @abc.abstractmethod
    async def start(self) -> None:
        """Subscribe the service's queues and spawn its loops."""

    async def on_stop(self) -> None:
        return None

    async def consume(self, queue: str, handler: Handler, prefetch: int) -> None:
        """Consume ``queue``, counting deliveries in progress (burst mode waits for them)."""

        async def counted(delivery: Delivery) -> None:
            self._busy += 1
            try:
                await handler(delivery)
            finally:
                self._busy -= 1

        self._consumed.append(queue)
        await self.broker.consume(queue, counted, prefetch=prefetch)

    async def idle(self) -> bool:
        """Nothing in this worker's hands and nothing waiting on its queues."""
        if self._busy:
            return False
        for queue in self._consumed:
            if await self.broker.queue_length(queue):
                return False
        return not self._busy

    async def run_burst(self, quiet_s: float = BURST_QUIET_S, timeout_s: float = BURST_TIMEOUT_S) -> None:
        """Process what is queued, then stop and return (raises BurstTimeout if it never ends)."""
        await run_to_idle(self, quiet_s=quiet_s, timeout_s=timeout_s)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def sleep_or_stop(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Only the main thread of a process may own signals; a worker embedded elsewhere
            # (tests, `bulkmail run`) is stopped by its owner instead.
            with contextlib.suppress(RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.open()
        try:
            await self._stopping.wait()
        finally:
            await self.close()

    async def open(self) -> None:
        attempt = 1
        while True:
            try:
                if self._owns_broker:
                    await self.broker.connect()
                await self.start()
                break
            except Exception as exc:
                if not self._owns_broker or attempt >= START_ATTEMPTS:
                    raise
                # RabbitMQ can refuse a consumer on a quorum queue that another process declared
                # a moment ago (its Raft member is not up yet) and then drops the whole
                # connection: several workers starting together hit this now and then.
                log.warning("could not start consuming; starting over", service=self.service, error=repr(exc))
                await self._abandon_start()
                await asyncio.sleep(min(RECONNECT_FIRST_S * 2 ** (attempt - 1), RECONNECT_MAX_S))
                attempt += 1
        self.broker.handler_failed = self._after_handler_failed
        self.spawn(self._watch_database(), f"{self.service}-database-watch")
        self.spawn(self._heartbeat(), f"{self.service}-heartbeat")
        if self.backlog_queues:
            self.spawn(self._report_backlog(), f"{self.service}-backlog")
        log.info("worker started", service=self.service)

    async def _abandon_start(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        with contextlib.suppress(Exception):
            await self.broker.close()

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self._stopping.set()
        log.info("worker stopping", service=self.service)
        if self._owns_broker:
            # Stops deliveries, lets the handlers in progress finish (and ack), then disconnects.
            await self.broker.close()
        await self.on_stop()
        # The loops see `stopping` at their next turn; cancelling one inside a database
        # transaction could leave its connection (and, on SQLite, the write lock) behind.
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=LOOP_STOP_TIMEOUT_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_db:
            await self.database.dispose()
        log.info("worker stopped", service=self.service)

    # -- the database going away and coming back ---------------------------------------------

    async def wait_for_database(self) -> None:
        """Return once the database answers again (or the worker stops). Callers that arrive
        while another is already waiting share its wait: one ping at a time, not one each."""
        if self._database_back is None or self._database_back.done():
            self._database_back = asyncio.create_task(self._reconnect_database())
        await asyncio.shield(self._database_back)

    async def _reconnect_database(self) -> None:
        metrics.record_dependency("database", False)
        log.warning("database unreachable; waiting for it", service=self.service)
        delay = RECONNECT_FIRST_S
        while not self.stopping:
            try:
                await self.database.ping()
            except Exception as exc:
                log.info("database still unreachable", service=self.service, retry_in=delay, error=repr(exc))
                await self.sleep_or_stop(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
            else:
                log.info("database reachable again", service=self.service)
                metrics.record_dependency("database", True)
                return

    async def _after_handler_failed(self, exc: BaseException) -> None:
        """Before a failed delivery goes back on the queue: hold it while the database is down."""
        if is_database_unavailable(exc):
            await self.wait_for_database()
        else:
            await asyncio.sleep(REDELIVERY_DELAY_S)

    async def _watch_database(self) -> None:
        metrics.record_dependency("database", True)
        while not self.stopping:
            await self.sleep_or_stop(DATABASE_WATCH_S)
            if self.stopping:
                return
            try:
                await self.database.ping()
            except Exception:
                await self.wait_for_database()

    async def loop_failed(self, what: str, exc: BaseException) -> None:
        """A background loop's turn raised: log it, and wait for the database if that was the cause."""
        if is_database_unavailable(exc):
            log.warning(f"{what} failed: database unreachable", service=self.service, error=repr(exc))
            await self.wait_for_database()
        else:
            log.exception(f"{what} failed; will try again", service=self.service)

    async def _heartbeat(self) -> None:
        path = heartbeat_path(self.settings, self.service)
        path.parent.mkdir(parents=True, exist_ok=True)
        while not self.stopping:
            path.touch()
            await self.sleep_or_stop(HEARTBEAT_INTERVAL_S)

    async def _report_backlog(self) -> None:
        while not self.stopping:
            for queue in self.backlog_queues:
                try:
                    metrics.set_queue_backlog(queue, await self.broker.queue_length(queue))
                except Exception:
                    log.warning("could not read a queue's length", queue=queue)
            await self.sleep_or_stop(BACKLOG_INTERVAL_S)


async def run_to_idle(*workers: Worker, quiet_s: float = BURST_QUIET_S, timeout_s: float = BURST_TIMEOUT_S) -> None:
    """Burst mode for workers that feed each other (a dispatcher and its mailers): open them,
    return once all of them have been idle together for ``quiet_s``, and close them.

    Work that waits for a time (a retry due in an hour, a paused account) is not queued work:
    a burst ends without it, as a worker started later would pick it up.
    """
    for worker in workers:
        await worker.open()
    try:
        await wait_idle(*workers, quiet_s=quiet_s, timeout_s=timeout_s)
    finally:
        for worker in workers:
            await worker.close()


async def wait_idle(*workers: Worker, quiet_s: float = BURST_QUIET_S, timeout_s: float = BURST_TIMEOUT_S) -> None:
    """Return once the (open) workers have all been idle together for ``quiet_s``: what was queued,
    and what that work queued in turn, is done. Raises BurstTimeout after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    quiet_since: float | None = None
    while True:
        now = loop.time()
        if all([await worker.idle() for worker in workers]):
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        if now >= deadline:
            raise BurstTimeout(f"still busy after {timeout_s:.0f} s: " + ", ".join(w.service for w in workers))
        await asyncio.sleep(BURST_POLL_S)
