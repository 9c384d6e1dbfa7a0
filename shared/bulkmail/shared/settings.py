"""Settings for every bulkmail service, read from ``BULKMAIL_*`` environment variables.

The defaults describe the embedded mode (`make run`): SQLite under the data directory, the
in-process broker, a capture SMTP server. Setting ``BULKMAIL_DATABASE_URL`` and
``BULKMAIL_AMQP_URL`` switches the same code to PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".bulkmail-data")
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKMAIL_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    amqp_url: str = "memory://"
    # Prefix for every exchange and queue, so several installs (or test runs) share one broker.
    broker_namespace: str = "bulkmail"
    host: str = "127.0.0.1"
    port: int = 8000
    # Base URL the unsubscribe links in outgoing mail point at.
    public_url: str = ""
    # Fernet key (urlsafe base64, 32 bytes) for SMTP/IMAP passwords at rest. In development a key
    # is generated once and kept in the data directory; production refuses to start without one.
    secret_key: SecretStr = SecretStr("")
    # Extra keys accepted for decryption only, newest first, for key rotation.
    old_secret_keys: list[SecretStr] = Field(default_factory=list)
    demo_api_key: SecretStr = SecretStr("")
    # The demo user `make run` creates for the web app; an empty password is generated once and
    # kept in the data directory, like the demo API key.
    demo_user_email: str = "demo@example.com"
    demo_password: SecretStr = SecretStr("")
    # Web sessions end after this long without a request, and in any case this long after sign-in.
    session_idle_timeout_s: float = 8 * 3600
    session_lifetime_s: float = 7 * 24 * 3600
    # Failed sign-ins within the window: from the first number on, answers are slowed (a growing
    # delay); at the refusal numbers, per account or per client address, sign-in answers 429.
    # The address limit is higher: many people can share one address behind a NAT.
    sign_in_failure_window_s: float = 900.0
    sign_in_failures_before_delay: int = 3
    sign_in_account_failures_before_refusal: int = 10
    sign_in_address_failures_before_refusal: int = 50
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"
    # System account for "bulk email done" notices; when unset the user's own account sends them.
    system_smtp_url: str = ""
    system_from_address: str = ""
    capture_smtp_port: int = 8025
    max_bulk_email_leads: int = 100_000
    # Dispatching: recipients per chunk, chunks of one bulk email queued at once (so a huge send
    # cannot bury a small one), and when an unfinished chunk counts as lost and is queued again.
    # Measured (benchmarks/bench_send_100k.txt): 400 x 3 sends 100,000 ~10% faster than 200 x 8
    # (less per-chunk work), and a 20-recipient send beside it waits less (fewer big chunks
    # compete for the mailers): 3 stays below two mailers' 4 + 4 chunks at once.
    chunk_size: int = 400
    chunks_in_flight: int = 3
    chunk_timeout_s: float = 300.0
    sweep_interval_s: float = 2.0
    # Mailer: SMTP transactions in progress at once per account (capped by the account's own limit).
    smtp_concurrency: int = 10
    # Chunks one mailer process works on at once.
    mailer_prefetch: int = 4
    smtp_timeout_s: float = 30.0
    # The largest message the mailer hands to SMTP, in bytes (headers and encoded bodies): like
    # common relays' 10 MB. A bigger one fails with the reason instead of going out.
    max_message_bytes: int = Field(default=10_000_000, ge=1_000)
    metrics_port: int = 9100
    # Input bounds (docs/operations.md, "Limits"): each refusal names the limit it hit.
    # HTTP: request bodies (413 above), the lead import's body, and JSON nesting (400 deeper).
    max_request_bytes: int = 4_000_000
    max_import_bytes: int = 200_000_000
    max_json_depth: int = 32
    # Leads: per lead, per request and per organisation; an import counts against the same caps.
    max_contacts_per_lead: int = 200
    max_emails_per_lead: int = 200
    max_phones_per_lead: int = 200
    max_custom_fields_per_request: int = 100
    max_custom_fields_per_organization: int = 1_000
    # ~1,200 leads/s end to end on a busy 2-core machine (benchmarks/bench_import.txt): 50,000
    # is well under a minute, on PostgreSQL as on SQLite.
    max_import_leads: int = 50_000
    # Leads an import writes per transaction. On SQLite the write lock is held only while a
    # batch's rows are numbered and written: ~30 ms for 200 leads, so other writers get in.
    import_batch_leads: int = 200
    # Templates: what one render may produce and how long it may take (refused above).
    max_rendered_subject_chars: int = 998
    max_rendered_part_chars: int = 2_000_000
    max_render_ms: int = 250
    max_template_loop_iterations: int = 10_000
    # Shrinks the per-minute/hour/day windows of account limits (0.05: a "minute" of 3 s), so
    # tests can prove a limit in seconds. Leave at 1 anywhere real.
    rate_window_scale: float = 1.0
    # What comes back (docs/feedback.md). The inbox sync: how often an account's INBOX is looked
    # at when the server offers no IDLE, and how long a worker's hold on an account lasts.
    inbox_sync_enabled: bool = True
    inbox_poll_interval_s: float = 60.0
    inbox_lease_s: float = 120.0
    # Soft bounces (mailbox full, greylisted for days...) suppress an address only after this
    # many, in different bulk emails.
    soft_bounce_limit: int = 3
    # A bounce that names only the address is matched to the account's sends of the last N days.
    bounce_match_days: int = 30
    # Webhooks: how old a signed timestamp may be, and the CA certificates trusted for Amazon
    # SNS signing certificates (empty: the system's). Tests point it at their own CA.
    webhook_max_age_s: float = 300.0
    sns_ca_file: str = ""
    # Host names SNS certificates may be fetched from (a URL in the message says where).
    sns_cert_hosts: list[str] = Field(default_factory=lambda: ["sns.*.amazonaws.com"])
    # Tracking: an open within this many seconds of sending is probably a scanner, not a person.
    machine_open_window_s: float = 10.0

    @field_validator("database_url")
    @classmethod
    def _no_sync_drivers(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'bulkmail.db'}"
        if self.environment == "production":
            if self.secret_key.get_secret_value() in _PLACEHOLDER_SECRETS:
                raise ValueError("BULKMAIL_SECRET_KEY must be set to a Fernet key in production")
            if self.is_sqlite:
                raise ValueError("production needs BULKMAIL_DATABASE_URL pointing at PostgreSQL")
        if self.secret_key.get_secret_value():
            _check_fernet_key(self.secret_key.get_secret_value())
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    def encryption_keys(self) -> list[str]:
        """The current key first, then the old ones still accepted for reading."""
        current = self.secret_key.get_secret_value() or _development_key(self.data_dir)
        return [current, *(k.get_secret_value() for k in self.old_secret_keys)]


def _check_fernet_key(key: str) -> None:
    try:
        if len(base64.urlsafe_b64decode(key.encode())) != 32:
            raise ValueError
    except ValueError:
        raise ValueError(
            "BULKMAIL_SECRET_KEY is not a Fernet key; make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None


def _development_key(data_dir: Path) -> str:
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
