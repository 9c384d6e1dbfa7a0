"""Whether an email address is one the mailer can deliver to: one rule for the API and the audience.

The lead and contact API refuses an address this rule rejects (400 naming the field); an address
already stored that fails it (written before the rule, or straight into the database) is excluded
from a bulk email as ``invalid_address`` by the pre-send audit and by the ledger build alike, so
it never becomes a send. A mail relay would reject such an address at ``RCPT TO`` at best, and at
worst (``a@x.example,b@y.example``, CRLF in the local part) it would smuggle a second recipient or
header into the envelope.

The syntax is email-validator's (RFC 5321/5322 addresses as relays accept them): no quoted local
parts, no domain literals, no display names, a domain with a dot. Internationalised addresses are
accepted (they need an SMTPUTF8 relay, which the mailer asks for). Special-use domain names that
no relay delivers to (``.local``, ``.localhost``, ``.invalid``, ``.onion``, ``.arpa``) are refused;
``.test`` (RFC 2606) is accepted, as staging setups and our tests send there.

The ledger build checks every address of a 10,000-lead batch, and email-validator takes ~50 µs
an address: the common shape (plain ASCII dot-atom, letters in the top-level domain) is accepted
by a regular expression first, ~1 µs, which accepts only addresses email-validator accepts too
(``tests/shared/test_addresses.py`` holds the two to the same answers).
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

__all__ = ["MAX_ADDRESS_LENGTH", "address_problem", "is_deliverable"]

MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit, less the angle brackets

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# email-validator's special-use names less "test"; the fast path leaves them to it.
_SPECIAL_USE = {"arpa", "invalid", "local", "localhost", "onion"}
_PLAIN = re.compile(rf"(?:{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")


def address_problem(address: str) -> str | None:
    """Why the mailer cannot deliver to ``address`` (a sentence for the user), or None if it can."""
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"is longer than {MAX_ADDRESS_LENGTH} characters"
    if _is_plain(address):
        return None
    return _email_validator_problem(address)


def _is_plain(address: str) -> bool:
    """The common shape, accepted without email-validator (it would accept it too)."""
    local, _, domain = address.rpartition("@")
    return (
        bool(_PLAIN.fullmatch(address))
        and len(local) <= 64
        and domain.rpartition(".")[2].lower() not in _SPECIAL_USE
        and "--" not in domain  # IDNA reserves "ab--" labels (bar Punycode's "xn--"): the validator decides
    )


def _email_validator_problem(address: str) -> str | None:
    try:
        validate_email(
            address,
            check_deliverability=False,  # syntax only: no DNS lookups on the request path
            test_environment=True,  # accept .test; see the module docstring
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
        )
    except EmailNotValidError as exc:
        return str(exc).rstrip(".")
    return None


def is_deliverable(address: str) -> bool:
    return address_problem(address) is None
