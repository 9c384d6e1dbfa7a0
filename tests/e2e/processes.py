"""Real service processes for the production-shape tests: `bulkmail dispatcher` / `bulkmail mailer`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bulkmail.shared.settings import Settings


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "BULKMAIL_DATABASE_URL": settings.database_url,
            "BULKMAIL_AMQP_URL": settings.amqp_url,
            "BULKMAIL_BROKER_NAMESPACE": settings.broker_namespace,
            "BULKMAIL_SECRET_KEY": settings.secret_key.get_secret_value(),
            "BULKMAIL_DATA_DIR": str(settings.data_dir),
            "BULKMAIL_PUBLIC_URL": settings.public_url or "https://bulkmail.example.test",
            "BULKMAIL_SWEEP_INTERVAL_S": str(settings.sweep_interval_s),
            "BULKMAIL_CHUNK_TIMEOUT_S": str(settings.chunk_timeout_s),
            "BULKMAIL_CHUNK_SIZE": str(settings.chunk_size),
            "BULKMAIL_CHUNKS_IN_FLIGHT": str(settings.chunks_in_flight),
            "BULKMAIL_MAILER_PREFETCH": str(settings.mailer_prefetch),
            "BULKMAIL_METRICS_PORT": "0",
            "BULKMAIL_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


class Service:
    """One service process; its output goes to a log file the test can read."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bulkmail.cli", self.name], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait: a graceful stop; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
