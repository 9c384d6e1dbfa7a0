"""The progress page's chart of messages sent over time: inline SVG drawn here, no chart library.

The ledger's ``sent_at`` times are counted per bucket in SQL (one GROUP BY, however many
recipients), with a bucket width picked so that a send of seconds and a send of days both make
at most ``MAX_BARS`` bars. A page polls every second; the figure is kept for ``CACHE_S`` seconds
per bulk email so that many open pages cost one query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.models import ACCEPTED_STATES, Recipient

MAX_BARS = 60
MIN_SLOTS = 20
CACHE_S = 2.0
# Bucket widths a reader can name ("per minute"), in seconds.
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
WIDTH, HEIGHT = 600, 160

_cache: dict[int, tuple[float, str]] = {}


@dataclass(frozen=True)
class Series:
    start: datetime  # the first bucket's start
    step: int  # seconds per bucket
    counts: list[int]


def bucket_width(span_s: float) -> int:
    return next((s for s in STEPS if span_s / s < MAX_BARS), STEPS[-1])


def _epoch(column: Any, dialect: str) -> Any:
    if dialect == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.extract("epoch", column), Integer)


async def sent_series(session: AsyncSession, bulk_email_id: int) -> Series | None:
    sent = (Recipient.bulk_email_id == bulk_email_id, Recipient.state.in_(ACCEPTED_STATES))
    first, last = (
        await session.execute(select(func.min(Recipient.sent_at), func.max(Recipient.sent_at)).where(*sent))
    ).one()
    if first is None or last is None:
        return None
    first, last = _aware(first), _aware(last)
    step = bucket_width((last - first).total_seconds() + 1)
    start_epoch = int(first.timestamp()) // step * step
    dialect = session.get_bind().dialect.name
    bucket = (_epoch(Recipient.sent_at, dialect) - start_epoch) // step
    rows = await session.execute(select(bucket.label("b"), func.count()).where(*sent).group_by("b"))
    n = int((last.timestamp() - start_epoch) // step) + 1
    counts = [0] * n
    for index, count in rows:
        i = int(index)
        if 0 <= i < n:
            counts[i] += int(count)
    return Series(datetime.fromtimestamp(start_epoch, UTC), step, counts)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _step_words(step: int) -> str:
    if step < 60:
        return "second" if step == 1 else f"{step} seconds"
    if step < 3600:
        return "minute" if step == 60 else f"{step // 60} minutes"
    if step < 86400:
        return "hour" if step == 3600 else f"{step // 3600} hours"
    return "day"


def draw(series: Series | None) -> str:
    """The chart as an SVG element (text), or a short note when nothing was sent yet."""
    if series is None or not series.counts:
        return '<p class="muted chart-empty">No message sent so far.</p>'
    peak = max(series.counts) or 1
    n = len(series.counts)
    # A send of a few seconds still gets narrow bars: the axis has room for at least MIN_SLOTS.
    bar_w = WIDTH / max(n, MIN_SLOTS)
    total = sum(series.counts)
    end = series.start + timedelta(seconds=series.step * n)
    axis_end = series.start + timedelta(seconds=series.step * max(n, MIN_SLOTS))
    title = f"Messages sent per {_step_words(series.step)}"
    desc = (
        f"{total:,} messages sent between {series.start:%H:%M:%S} and {end:%H:%M:%S} UTC; "
        f"at most {peak:,} per {_step_words(series.step)}."
    )
    # The SVG stretches to the card's width (preserveAspectRatio="none"), so its text would stretch
    # too: the labels are HTML around it.
    parts = [
        '<div class="chart-wrap">',
        f'<span class="chart-peak" aria-hidden="true">{peak:,}</span>',
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" preserveAspectRatio="none" role="img"'
        ' aria-labelledby="chart-title chart-desc">',
        f'<title id="chart-title">{escape(title)}</title><desc id="chart-desc">{escape(desc)}</desc>',
        f'<line class="chart-axis" x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}"/>',
    ]
    for i, count in enumerate(series.counts):
        if not count:
            continue
        h = max(1.0, (HEIGHT - 2) * count / peak)
        at = series.start + timedelta(seconds=series.step * i)
        parts.append(
            f'<rect class="chart-bar" x="{i * bar_w + bar_w * 0.1:.1f}" y="{HEIGHT - 1 - h:.1f}" '
            f'width="{max(bar_w * 0.8, 1):.1f}" height="{h:.1f}"><title>{count:,} at {at:%H:%M:%S} UTC</title></rect>'
        )
    parts.append("</svg>")
    parts.append(
        '<div class="chart-axis-labels" aria-hidden="true">'
        f"<span>{series.start:%H:%M:%S}</span><span>per {escape(_step_words(series.step))}</span>"
        f"<span>{axis_end:%H:%M:%S} UTC</span></div></div>"
    )
    return "".join(parts)


async def sent_chart(session: AsyncSession, bulk_email_id: int, *, fresh: bool = False) -> str:
    now = time.monotonic()
    cached = _cache.get(bulk_email_id)
    if cached is not None and not fresh and now - cached[0] < CACHE_S:
        return cached[1]
    svg = draw(await sent_series(session, bulk_email_id))
    if len(_cache) > 1000:
        _cache.clear()
    _cache[bulk_email_id] = (now, svg)
    return svg
