"""The metrics module: what a Prometheus server scraping bulkmail would see."""

from __future__ import annotations

import socket
import urllib.request

import httpx
import pytest
from fastapi import FastAPI, Response
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bulkmail.shared import metrics
from bulkmail.shared.models import BulkEmailStatus, SkipReason


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _scrape_families() -> dict[str, set[str]]:
    """Metric family name -> the label names its samples carry, parsed from the exposition text."""
    text = generate_latest(REGISTRY).decode()
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = families.setdefault(family.name, set())
        for sample in family.samples:
            names.update(sample.labels)
    return families


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sent_failed_and_deferred_count_per_account_and_reason() -> None:
    before_sent = _value("bulkmail_emails_sent_total", account_id=metrics.account_label(41))
    before_failed = _value(
        "bulkmail_emails_failed_total", account_id=metrics.account_label(41), reason="recipient_refused"
    )
    before_deferred = _value(
        "bulkmail_emails_deferred_total", account_id=metrics.account_label(41), reason="rate_limited"
    )

    metrics.record_sent(41, duration_seconds=0.2)
    metrics.record_sent(41)
    metrics.record_failed(41, "recipient_refused", duration_seconds=0.1)
    metrics.record_deferred(41, "rate_limited")

    assert _value("bulkmail_emails_sent_total", account_id=metrics.account_label(41)) == before_sent + 2
    assert (
        _value("bulkmail_emails_failed_total", account_id=metrics.account_label(41), reason="recipient_refused")
        == before_failed + 1
    )
    assert (
        _value("bulkmail_emails_deferred_total", account_id=metrics.account_label(41), reason="rate_limited")
        == before_deferred + 1
    )


def test_send_latency_lands_in_the_histogram_by_outcome() -> None:
    before = _value("bulkmail_send_duration_seconds_count", outcome="sent")
    before_fast = _value("bulkmail_send_duration_seconds_bucket", outcome="sent", le="0.25")

    metrics.record_sent(7, duration_seconds=0.2)

    assert _value("bulkmail_send_duration_seconds_count", outcome="sent") == before + 1
    assert _value("bulkmail_send_duration_seconds_bucket", outcome="sent", le="0.25") == before_fast + 1


def test_an_unlisted_reason_is_counted_as_other_not_as_a_new_series() -> None:
    smtp_text = "550 5.1.1 <jane@example.com>: Recipient address rejected"
    before = _value("bulkmail_emails_failed_total", account_id=metrics.account_label(3), reason="other")

    metrics.record_failed(3, smtp_text)

    assert _value("bulkmail_emails_failed_total", account_id=metrics.account_label(3), reason="other") == before + 1
    assert "jane@example.com" not in generate_latest(REGISTRY).decode()


def test_account_label_refuses_anything_but_the_integer_id() -> None:
    with pytest.raises(TypeError):
        metrics.record_sent("jane@example.com")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        metrics.record_imap_copy(True, "appended")


def test_backlog_rate_limiter_imap_and_bulk_email_metrics() -> None:
    metrics.set_queue_backlog("send", 1234)
    waits = _value("bulkmail_rate_limiter_waits_total", account_id=metrics.account_label(9), limit="per_minute")
    waited = _value("bulkmail_rate_limiter_wait_seconds_total", account_id=metrics.account_label(9), limit="per_minute")
    copies = _value("bulkmail_imap_copies_total", account_id=metrics.account_label(9), outcome="appended")
    done = _value("bulkmail_bulk_emails_total", status="done")
    skipped = _value("bulkmail_recipients_skipped_total", reason="unsubscribed")
    unknown = _value("bulkmail_emails_unknown_total", account_id=metrics.account_label(9))

    metrics.record_rate_limit_wait(9, "per_minute", 1.5)
    metrics.record_imap_copy(9, "appended")
    metrics.record_bulk_email_status(BulkEmailStatus.done)
    metrics.record_skipped("unsubscribed", count=3)
    metrics.record_unknown(9)

    assert _value("bulkmail_queue_backlog_messages", queue="send") == 1234
    assert (
        _value("bulkmail_rate_limiter_waits_total", account_id=metrics.account_label(9), limit="per_minute")
        == waits + 1
    )
    assert (
        _value("bulkmail_rate_limiter_wait_seconds_total", account_id=metrics.account_label(9), limit="per_minute")
        == waited + 1.5
    )
    assert _value("bulkmail_imap_copies_total", account_id=metrics.account_label(9), outcome="appended") == copies + 1
    assert _value("bulkmail_bulk_emails_total", status="done") == done + 1
    assert _value("bulkmail_recipients_skipped_total", reason="unsubscribed") == skipped + 3
    assert _value("bulkmail_emails_unknown_total", account_id=metrics.account_label(9)) == unknown + 1


def test_exposition_parses_and_no_metric_carries_an_unbounded_label() -> None:
    metrics.record_sent(1, duration_seconds=0.01)
    metrics.record_failed(1, "auth_failed")
    metrics.record_deferred(1, "smtp_temporary")
    metrics.record_rate_limit_wait(1, "per_hour", 0.5)
    metrics.record_imap_copy(1, "failed")
    metrics.record_bulk_email_status("processing")
    metrics.set_queue_backlog("send", 0)

    families = _scrape_families()
    ours = {name: labels for name, labels in families.items() if name.startswith("bulkmail_")}

    assert {
        "bulkmail_emails_sent",
        "bulkmail_emails_failed",
        "bulkmail_emails_deferred",
        "bulkmail_send_duration_seconds",
        "bulkmail_queue_backlog_messages",
        "bulkmail_rate_limiter_waits",
        "bulkmail_rate_limiter_wait_seconds",
        "bulkmail_imap_copies",
        "bulkmail_bulk_emails",
    } <= set(ours)
    allowed_labels = {"account_id", "reason", "outcome", "queue", "limit", "status", "dependency", "le"}
    for name, labels in ours.items():
        assert labels <= allowed_labels, f"{name} has labels {labels - allowed_labels}"


def test_a_dependency_coming_back_counts_one_reconnect_and_names_stay_bounded() -> None:
    metrics.record_dependency("broker", True)
    before = _value("bulkmail_reconnects_total", dependency="broker")
    metrics.record_dependency("broker", True)  # still up: no reconnect
    metrics.record_dependency("broker", False)
    assert _value("bulkmail_dependency_up", dependency="broker") == 0
    metrics.record_dependency("broker", False)  # still down
    metrics.record_dependency("broker", True)
    assert _value("bulkmail_dependency_up", dependency="broker") == 1
    assert _value("bulkmail_reconnects_total", dependency="broker") == before + 1
    metrics.record_dependency("db.internal:5432", False)  # never a host name as a label value
    assert _value("bulkmail_dependency_up", dependency="other") == 0


def test_status_and_skip_reason_sets_follow_the_data_model() -> None:
    assert {s.value for s in BulkEmailStatus} | {metrics.OTHER} == metrics.BULK_EMAIL_STATUSES
    assert {r.value for r in SkipReason} | {metrics.OTHER} == metrics.SKIP_REASONS


def test_worker_metrics_server_serves_the_registry_over_http() -> None:
    port = _free_port()
    started = metrics.start_metrics_server(port, addr="127.0.0.1")
    assert started is not None
    server, thread = started
    try:
        metrics.record_sent(5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
            content_type = response.headers["Content-Type"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert content_type.startswith("text/plain")
    assert f'bulkmail_emails_sent_total{{account_id="{metrics.account_label(5)}"}}' in body


def test_port_zero_turns_the_worker_server_off() -> None:
    assert metrics.start_metrics_server(0) is None


async def test_query_api_route_serves_metrics_at_exactly_slash_metrics() -> None:
    app = FastAPI()

    @app.get("/metrics", include_in_schema=False)
    async def serve_metrics() -> Response:
        body, content_type = metrics.render_metrics()
        return Response(body, media_type=content_type)

    metrics.record_sent(6)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert f'bulkmail_emails_sent_total{{account_id="{metrics.account_label(6)}"}}' in response.text
    assert "bulkmail_emails_sent" in {f.name for f in text_string_to_metric_families(response.text)}


async def test_bare_asgi_app_serves_the_same_exposition() -> None:
    metrics.record_sent(8)
    transport = httpx.ASGITransport(app=metrics.MetricsASGIApp())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert f'bulkmail_emails_sent_total{{account_id="{metrics.account_label(8)}"}}' in response.text
