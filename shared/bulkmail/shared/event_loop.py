"""The event loop the services run on: uvloop where it is installed, asyncio's own otherwise.

uvloop runs the same asyncio code with its transports and scheduling in C; in the mailer,
where every message is a handful of socket writes and task switches, that is a large share of
the CPU spent per message (see benchmarks/bench_send.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no wheels for some platforms
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
