"""How long to wait: a recipient's next attempt, and an email account's pause.

The policy, apart from what a reply means (``replies``): given a verdict and what came before
(attempts so far, pauses in a row), when to try again. docs/ledger.md describes how pauses
escalate and reset.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from bulkmail.mailer.replies import PauseKind, ReplyVerdict

RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)
# Like an MTA: stop retrying a message after a few days.
MAX_ATTEMPTS = 20


def next_attempt_delay(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff (1 min, 2 min, 4 min ... capped at 6 h) with jitter.

    "Equal jitter": half the delay is fixed, half random, so retries of many recipients that
    failed together spread out instead of hitting the server again at the same second.
    """
    exp = RETRY_BASE * (1 << max(0, min(attempts - 1, 20)))
    delay = min(exp, RETRY_CAP)
    r: float = (rng or random).random()
    return delay / 2 + delay / 2 * r


_PAUSE_STEPS: dict[PauseKind, list[timedelta]] = {
    PauseKind.throttle: [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4)],
    PauseKind.login_limit: [timedelta(minutes=30), timedelta(hours=1), timedelta(hours=2), timedelta(hours=4)],
    PauseKind.auth: [timedelta(hours=1), timedelta(hours=4), timedelta(hours=12), timedelta(hours=24)],
    PauseKind.sender_mailbox_full: [timedelta(hours=1), timedelta(hours=4), timedelta(hours=12)],
    PauseKind.daily_quota: [timedelta(hours=24)],
    # Short at first: a server restart or a network drop is usually over within a minute or two,
    # and trying to connect costs the account no quota (make chaos's smtp-down waited 15 minutes).
    PauseKind.unreachable: [
        timedelta(minutes=2),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=4),
        timedelta(hours=12),
    ],
}
# Attempts in a row that cannot reach or use the account's server before the account is paused.
UNREACHABLE_BEFORE_PAUSE = 3
_MIN_QUOTA_PAUSE = timedelta(minutes=15)


def pause_until(
    verdict: ReplyVerdict,
    *,
    previous_pauses: int,
    now: datetime,
    day_window_frees_at: datetime | None = None,
) -> datetime:
    """When a paused account may send again.

    The interval grows with each pause in a row (``previous_pauses``, 0 for the first). A daily
    quota lasts until the rolling 24 h window frees up, i.e. the oldest send in it turns 24 h
    old (``rate_limit.day_window_frees_at``); without that knowledge, a full day.
    """
    kind = verdict.pause or PauseKind.throttle
    if kind is PauseKind.daily_quota and day_window_frees_at is not None:
        return max(day_window_frees_at, now + _MIN_QUOTA_PAUSE)
    steps = _PAUSE_STEPS[kind]
    return now + steps[min(previous_pauses, len(steps) - 1)]
