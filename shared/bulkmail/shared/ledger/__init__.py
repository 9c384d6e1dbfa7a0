"""The recipient ledger: every statement that writes ``recipients`` lives in this package.

Each write is a named transition, and each is conditional on the state it moves from, so a
late, repeated or racing caller changes nothing instead of moving a row backwards. The states,
the allowed moves, who calls which and the crash bound are described in docs/ledger.md.

- ``build``: ``add_recipients`` (the dispatcher writes the ledger from the snapshot).
- ``chunks``: ``ChunkScope``, which rows a chunk carries (an id range, or retries named by ``chunk_id``).
- ``queue``: ``next_range`` (a read: chunks of never-tried recipients write no row), ``queue_retries``,
  ``defer``, ``cancel_unsent``, ``requeue_failed``.
- ``send``: ``claim`` (with the consent check), ``mark_unknown``, ``record_outcomes``.
- ``feedback``: ``mark_bounced``, ``mark_complained``, ``mark_replied`` (what comes back after ``sent``).
- ``sent_copies``: the Sent-copy sub-state (``claim_copies``, ``renew_copies``, ``record_copy``,
  ``finish_copies``, ``copies_lost``, ``copies_published``) and the claim's lease (``COPY_LEASE``).
"""

from bulkmail.shared.ledger.build import add_recipients
from bulkmail.shared.ledger.chunks import ChunkScope
from bulkmail.shared.ledger.feedback import mark_bounced, mark_complained, mark_replied
from bulkmail.shared.ledger.queue import (
    IdRange,
    cancel_unsent,
    defer,
    next_range,
    queue_retries,
    requeue_failed,
    retries_due,
    work_left,
)
from bulkmail.shared.ledger.send import (
    ActivitySource,
    Claim,
    Claimed,
    OutcomeRow,
    claim,
    mark_unknown,
    record_outcomes,
)
from bulkmail.shared.ledger.sent_copies import (
    CLAIMABLE_COPIES,
    COPY_LEASE,
    COPY_LEASE_RENEW,
    COPY_LEASE_START,
    claim_copies,
    copies_lost,
    copies_published,
    finish_copies,
    record_copy,
    renew_copies,
)
from bulkmail.shared.models import RecipientState, SentCopyState, SkipReason

__all__ = [
    "CLAIMABLE_COPIES",
    "COPY_LEASE",
    "COPY_LEASE_RENEW",
    "COPY_LEASE_START",
    "ActivitySource",
    "ChunkScope",
    "Claim",
    "Claimed",
    "IdRange",
    "OutcomeRow",
    "RecipientState",
    "SentCopyState",
    "SkipReason",
    "add_recipients",
    "cancel_unsent",
    "claim",
    "claim_copies",
    "copies_lost",
    "copies_published",
    "defer",
    "finish_copies",
    "mark_bounced",
    "mark_complained",
    "mark_replied",
    "mark_unknown",
    "next_range",
    "queue_retries",
    "record_copy",
    "record_outcomes",
    "renew_copies",
    "requeue_failed",
    "retries_due",
    "work_left",
]
