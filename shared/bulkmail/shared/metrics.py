"""Every Prometheus metric bulkmail exports, and the two ways to serve them.

All metric objects live here so their names, help texts and label sets are reviewed in one
place. Services call the small ``record_*`` functions rather than touching the objects: the
functions are what keeps label cardinality bounded.

- ``account_id`` is an opaque token per email account (``account_label``: an HMAC of the
  account's id under a key derived from ``BULKMAIL_SECRET_KEY``): one series per account, never
  an address, a host name or anything a user typed, and not the database id, so metrics that
  leak do not tell an outsider how many accounts (or organisations) there are or which is which.
  ``bulkmail account-label <id>`` prints an account's token for the operator.
- ``queue`` is a queue name the code itself passes to the broker, so it is bounded by the code.
- Every other label takes values from a closed set below. A value outside its set is counted
  as ``other`` instead of creating a new series, so a new SMTP error text can never explode the
  time-series database.

Serving: every service (query-api, dispatcher, mailer) calls ``start_metrics_server(port)``
once at startup, on ``BULKMAIL_METRICS_PORT``, apart from the public API port. Each pod runs one process,
so the default registry is enough (no prometheus multiprocess directory): scale with replicas,
not with uvicorn workers.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import start_http_server as _start_http_server

__all__ = [
    "BULK_EMAIL_STATUSES",
    "DEFER_REASONS",
    "DEPENDENCIES",
    "FAILURE_REASONS",
    "IMAP_COPY_OUTCOMES",
    "OTHER",
    "RATE_LIMITS",
    "SEND_OUTCOMES",
    "SKIP_REASONS",
    "MetricsASGIApp",
    "account_label",
    "dependency_up",
    "record_bulk_email_status",
    "record_deferred",
    "record_dependency",
    "record_failed",
    "record_imap_copy",
    "record_rate_limit_wait",
    "record_send_duration",
    "record_sent",
    "record_skipped",
    "record_unknown",
    "render_metrics",
    "set_queue_backlog",
    "start_metrics_server",
    "use_label_key",
]

OTHER = "other"

# Why a send failed for good. Map exceptions and SMTP replies onto these; keep the list short.
FAILURE_REASONS = frozenset(
    {
        "recipient_refused",  # 5xx to RCPT TO: a bad address
        "sender_refused",  # 5xx to MAIL FROM
        "message_refused",  # 5xx after DATA (content, size, policy)
        "auth_failed",  # the account's credentials were rejected
        "tls_failed",  # certificate or handshake failure
        "render_failed",  # the template could not be rendered for this recipient
        "max_attempts",  # deferred too many times
        "account_unusable",  # account deleted, disabled or missing its password
        OTHER,
    }
)

# Why a send was put off for later.
DEFER_REASONS = frozenset(
    {
        "smtp_temporary",  # a 4xx reply
        "connection_failed",  # could not reach the SMTP server
        "timeout",
        "rate_limited",  # our own limiter said "not yet"
        "provider_throttled",  # the provider told us to slow down; the account is paused
        "account_paused",  # the account (or all sending) is paused by an operator
        OTHER,
    }
)

SKIP_REASONS = frozenset(
    {
        "no_email",
        "unsubscribed",
        "duplicate_address",
        "already_received_template",
        "suppressed",
        "invalid_address",
        "cancelled",
        "contact_deleted",
        "address_changed",
        OTHER,
    }
)

# The account limits the rate limiter enforces (EmailAccount.limit_* and friends).
RATE_LIMITS = frozenset({"per_minute", "per_hour", "per_day", "min_delay", "connections", OTHER})

# Sent-folder copy outcomes, matching Recipient.sent_copy_state plus "retried".
IMAP_COPY_OUTCOMES = frozenset({"appended", "skipped", "failed", "unknown", "retried", OTHER})

SEND_OUTCOMES = frozenset({"sent", "failed", "deferred", OTHER})

# BulkEmailStatus values; tests/shared/test_metrics.py keeps this in step with the model.
BULK_EMAIL_STATUSES = frozenset(
    {"created", "loading", "processing", "done", "paused", "resuming", "error", "cancelled", OTHER}
)

# What a process connects to and reconnects to by itself when it goes away.
DEPENDENCIES = frozenset({"database", "broker", OTHER})

# Sending over someone else's SMTP server: most replies come in well under a second, slow
# providers and greylisting proxies take tens of seconds, and the client timeout caps the tail.
SEND_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

EMAILS_SENT = Counter(
    "bulkmail_emails_sent",
    "Emails the recipient's SMTP server accepted (250 after DATA).",
    ["account_id"],
)
EMAILS_FAILED = Counter(
    "bulkmail_emails_failed",
    "Emails given up on for good, by reason.",
    ["account_id", "reason"],
)
EMAILS_DEFERRED = Counter(
    "bulkmail_emails_deferred",
    "Send attempts put off for a later retry, by reason.",
    ["account_id", "reason"],
)
EMAILS_UNKNOWN = Counter(
    "bulkmail_emails_unknown",
    "Recipients found in 'sending' after a crash: handed to SMTP but the reply was never recorded.",
    ["account_id"],
)
RECIPIENTS_SKIPPED = Counter(
    "bulkmail_recipients_skipped",
    "Recipients the dispatcher left out of a bulk email, by reason.",
    ["reason"],
)
SEND_DURATION = Histogram(
    "bulkmail_send_duration_seconds",
    "Time from opening the SMTP transaction to the server's final reply.",
    ["outcome"],
    buckets=SEND_DURATION_BUCKETS,
)
QUEUE_BACKLOG = Gauge(
    "bulkmail_queue_backlog_messages",
    "Messages ready on a work queue, as last seen by this process.",
    ["queue"],
)
RATE_LIMITER_WAITS = Counter(
    "bulkmail_rate_limiter_waits",
    "Times a send had to wait for an account's rate limit, by the limit that held it back.",
    ["account_id", "limit"],
)
RATE_LIMITER_WAIT_SECONDS = Counter(
    "bulkmail_rate_limiter_wait_seconds",
    "Seconds sends spent waiting for an account's rate limit.",
    ["account_id", "limit"],
)
IMAP_COPIES = Counter(
    "bulkmail_imap_copies",
    "Copies of sent emails to the account's IMAP Sent folder, by outcome.",
    ["account_id", "outcome"],
)
BULK_EMAILS = Counter(
    "bulkmail_bulk_emails",
    "Bulk emails entering each status.",
    ["status"],
)
DEPENDENCY_UP = Gauge(
    "bulkmail_dependency_up",
    "1 while this process reaches the dependency, 0 while it is cut off and reconnecting.",
    ["dependency"],
)
RECONNECTS = Counter(
    "bulkmail_reconnects",
    "Times this process lost a dependency and got it back by itself.",
    ["dependency"],
)
# Last state per dependency, so only a down-to-up change counts as a reconnect.
_dependency_state: dict[str, bool] = {}


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


# Until a service sets the installation's key, a random one: labels are opaque either way, and
# only processes sharing BULKMAIL_SECRET_KEY agree on them (what sums across mailers need).
_label_key = secrets.token_bytes(32)


def use_label_key(secret: str) -> None:
    """Derive the account-label key from the installation's secret key (every service does this)."""
    global _label_key
    _label_key = hmac.new(secret.encode(), b"bulkmail metrics account labels", hashlib.sha256).digest()


@functools.lru_cache(maxsize=4096)
def _token(key: bytes, account_id: int) -> str:
    return "a" + hmac.new(key, str(account_id).encode(), hashlib.sha256).hexdigest()[:12]


def account_label(account_id: int) -> str:
    """The ``account_id`` label value of an email account: stable, opaque, not enumerable."""
    return _token(_label_key, account_id)


def _account(account_id: int) -> str:
    # Only the integer id is accepted: anything else (an address, a name) is a bug at the call site.
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise TypeError(f"account_id must be the EmailAccount's integer id, not {type(account_id).__name__}")
    return account_label(account_id)


def record_sent(account_id: int, duration_seconds: float | None = None) -> None:
    EMAILS_SENT.labels(account_id=_account(account_id)).inc()
    if duration_seconds is not None:
        record_send_duration("sent", duration_seconds)


def record_failed(account_id: int, reason: str, duration_seconds: float | None = None) -> None:
    EMAILS_FAILED.labels(account_id=_account(account_id), reason=_bounded(reason, FAILURE_REASONS)).inc()
    if duration_seconds is not None:
        record_send_duration("failed", duration_seconds)


def record_deferred(account_id: int, reason: str, duration_seconds: float | None = None) -> None:
    EMAILS_DEFERRED.labels(account_id=_account(account_id), reason=_bounded(reason, DEFER_REASONS)).inc()
    if duration_seconds is not None:
        record_send_duration("deferred", duration_seconds)


def record_unknown(account_id: int) -> None:
    EMAILS_UNKNOWN.labels(account_id=_account(account_id)).inc()


def record_skipped(reason: str, count: int = 1) -> None:
    RECIPIENTS_SKIPPED.labels(reason=_bounded(reason, SKIP_REASONS)).inc(count)


def record_send_duration(outcome: str, duration_seconds: float) -> None:
    SEND_DURATION.labels(outcome=_bounded(outcome, SEND_OUTCOMES)).observe(duration_seconds)


def set_queue_backlog(queue: str, messages: int) -> None:
    """``queue`` is the short name the code passes to the broker ("send"); a code constant, so bounded."""
    QUEUE_BACKLOG.labels(queue=queue).set(messages)


def record_rate_limit_wait(account_id: int, limit: str, waited_seconds: float) -> None:
    labels = {"account_id": _account(account_id), "limit": _bounded(limit, RATE_LIMITS)}
    RATE_LIMITER_WAITS.labels(**labels).inc()
    RATE_LIMITER_WAIT_SECONDS.labels(**labels).inc(max(waited_seconds, 0.0))


def record_imap_copy(account_id: int, outcome: str) -> None:
    IMAP_COPIES.labels(account_id=_account(account_id), outcome=_bounded(outcome, IMAP_COPY_OUTCOMES)).inc()


def record_bulk_email_status(status: str) -> None:
    BULK_EMAILS.labels(status=_bounded(str(status), BULK_EMAIL_STATUSES)).inc()


def record_dependency(dependency: str, up: bool) -> None:
    """The process reaches ``dependency`` ("database", "broker") now, or lost it; a lost one
    coming back counts as a reconnect."""
    name = _bounded(dependency, DEPENDENCIES)
    if up and _dependency_state.get(name) is False:
        RECONNECTS.labels(dependency=name).inc()
    _dependency_state[name] = up
    DEPENDENCY_UP.labels(dependency=name).set(1 if up else 0)


def dependency_up(dependency: str) -> bool | None:
    """What was last recorded for ``dependency`` (None: nothing yet)."""
    return _dependency_state.get(_bounded(dependency, DEPENDENCIES))


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread] | None:
    """Serve ``/metrics`` on ``port`` from a daemon thread; port 0 turns it off (tests).

    Every service calls it at startup, the query-api too: its API port is public and serves no
    metrics. ``bulkmail run`` (all services in one process) calls it once, on loopback. The
    caller should call ``server.shutdown()`` on exit; the thread is a daemon, so forgetting only
    costs a socket at interpreter exit.
    """
    if port == 0:
        return None
    return _start_http_server(port, addr=addr, registry=registry)


def render_metrics(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The exposition body and its content type, for the query-api's ``/metrics`` route::

        @router.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            body, content_type = render_metrics()
            return Response(body, media_type=content_type)

    A plain route (rather than ``app.mount``) serves exactly ``/metrics``; a mount answers it
    with a redirect to ``/metrics/``.
    """
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsASGIApp:
    """The same exposition as a bare ASGI app, for servers that mount sub-applications."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._app = _make_asgi_app(registry)

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        await self._app(scope, receive, send)


def reset_for_tests(collectors: Iterable[Counter | Gauge | Histogram] | None = None) -> None:
    """Forget every labelled series, so a test can assert on absolute values."""
    for metric in collectors or _ALL:
        metric.clear()
    if collectors is None:
        _dependency_state.clear()


_ALL: tuple[Counter | Gauge | Histogram, ...] = (
    EMAILS_SENT,
    EMAILS_FAILED,
    EMAILS_DEFERRED,
    EMAILS_UNKNOWN,
    RECIPIENTS_SKIPPED,
    SEND_DURATION,
    QUEUE_BACKLOG,
    RATE_LIMITER_WAITS,
    RATE_LIMITER_WAIT_SECONDS,
    IMAP_COPIES,
    BULK_EMAILS,
    DEPENDENCY_UP,
    RECONNECTS,
)
