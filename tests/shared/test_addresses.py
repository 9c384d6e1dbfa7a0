"""One rule decides whether the mailer can deliver to an address; its fast path agrees with it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkmail.shared import addresses
from bulkmail.shared.addresses import address_problem

DELIVERABLE = [
    "jane@acme.example",
    "Jane.Doe+news@mail.acme.co.uk",
    "o'brien@acme.example",
    "x@acme.test",
    "üser@exämple.de",  # internationalised: needs an SMTPUTF8 relay, which the mailer asks for
]
UNDELIVERABLE = [
    "a@x.example,b@y.example",
    "<a>@x.example",
    "a<b>@x.example",
    '"a b"@x.example',
    "a b@x.example",
    "a\r\n@x.example",
    "a@x.example\r\nBcc: b@y.example",
    "a@",
    "@x.example",
    "a@x",
    "a@localhost",
    "a@corp.local",
    "a@[127.0.0.1]",
    "a..b@x.example",
    ".a@x.example",
    "a@-x.example",
    "a@" + "b" * 250 + ".example",
    "Jane <jane@x.example>",
]


@pytest.mark.parametrize("address", DELIVERABLE)
def test_deliverable_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize("address", UNDELIVERABLE)
def test_undeliverable_addresses_are_named_with_a_reason(address: str) -> None:
    problem = address_problem(address)
    assert problem and not problem.endswith(".")


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
ATOM = st.text(ATEXT, min_size=1, max_size=8)
LABEL = st.text("abz09-", min_size=1, max_size=12).filter(lambda label: label[0] != "-" and label[-1] != "-")
PLAIN = st.builds(
    lambda local, labels, tld: ".".join(local) + "@" + ".".join([*labels, tld]),
    st.lists(ATOM, min_size=1, max_size=4),
    st.lists(LABEL, min_size=1, max_size=3),
    st.sampled_from(["example", "com", "test", "local", "de", "io", "localhost", "invalid"]),
)


@settings(max_examples=200, derandomize=True, database=None)
@given(PLAIN)
def test_the_fast_path_accepts_only_what_email_validator_accepts(address: str) -> None:
    if addresses._is_plain(address) and len(address) <= addresses.MAX_ADDRESS_LENGTH:
        assert addresses._email_validator_problem(address) is None, address
