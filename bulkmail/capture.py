"""A local capture SMTP server (aiosmtpd) for the embedded mode and the tests.

It accepts every message and keeps it: in memory (tests read ``messages``) and, when given a
directory, as ``.eml`` files a developer can open.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class CaptureHandler:
    directory: Path | None = None
    max_kept: int = 100_000
    messages: list[Captured] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        item = Captured(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], data, time.time())
        if len(self.messages) < self.max_kept:
            self.messages.append(item)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{int(item.received_at * 1000)}-{len(self.messages)}.eml"
            await asyncio.to_thread((self.directory / name).write_bytes, data)
        return "250 Message accepted for delivery"


class CaptureServer:
    """Runs in its own thread (aiosmtpd's Controller), so it never competes with our event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8025, directory: Path | None = None) -> None:
        self.handler = CaptureHandler(directory)
        self.controller = Controller(self.handler, hostname=host, port=port, ready_timeout=10)

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> CaptureServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
