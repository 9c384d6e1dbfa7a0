"""Finding an IMAP account's Sent folder.

Folder names are localized and vary by server ("Sent", "Sent Items", "[Gmail]/Απεσταλμένα"), so
the folder is found by its ``\\Sent`` attribute first and by name only as a last resort:

1. a plain ``LIST "" "*"``: Gmail puts the special-use attributes in every LIST reply without
   advertising SPECIAL-USE, and so do Dovecot and others;
2. ``LIST "" "*" RETURN (SPECIAL-USE)`` where LIST-EXTENDED/SPECIAL-USE is offered (servers
   that only return the attributes when asked; the form is a BAD elsewhere);
3. ``XLIST``, Gmail's old pre-standard command, where offered;
4. the common names, compared case-insensitively after modified UTF-7 decoding.

Names are kept decoded (what a user reads) and encoded again for the wire.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Protocol

COMMON_SENT_NAMES = (
    "Sent",
    "Sent Items",  # Exchange / Microsoft 365
    "Sent Messages",  # Apple
    "Sent Mail",
    "[Gmail]/Sent Mail",
    "[Google Mail]/Sent Mail",
    "INBOX/Sent",  # Courier / cPanel put everything under INBOX
    "INBOX/Sent Items",
    "INBOX/Sent Messages",
)

_LIST_LINE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delim>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$', re.I)
# atom-specials minus "]", which an astring may contain (RFC 3501 §9: ASTRING-CHAR includes resp-specials).
_ATOM_SPECIALS = re.compile(r'[\s(){%*"\\\x00-\x1f\x7f]')


@dataclass(frozen=True)
class Mailbox:
    name: str  # decoded from modified UTF-7
    delimiter: str | None
    attributes: frozenset[str]  # lower-cased, e.g. {"\\sent", "\\hasnochildren"}

    @property
    def selectable(self) -> bool:
        return not self.attributes & {"\\noselect", "\\nonexistent"}


def parse_list_line(line: bytes) -> Mailbox | None:
    """One untagged LIST/XLIST line as aioimaplib hands it over (``* LIST`` already removed)."""
    found = _LIST_LINE.match(line.strip())
    if not found:
        return None  # the tagged status line, or a name sent as a literal (not used by real servers here)
    delim_raw = found["delim"].decode("ascii", "replace")
    delimiter = None if delim_raw.upper() == "NIL" else _unquote(delim_raw)
    raw_name = found["name"].decode("utf-8", "replace")
    name = decode_mutf7(_unquote(raw_name) if raw_name.startswith('"') else raw_name)
    attributes = frozenset(a.lower() for a in found["flags"].decode("ascii", "replace").split())
    return Mailbox(name=name, delimiter=delimiter, attributes=attributes)


def parse_list_response(lines: list[bytes]) -> list[Mailbox]:
    return [m for m in (parse_list_line(line) for line in lines) if m is not None]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def find_by_attribute(mailboxes: list[Mailbox]) -> Mailbox | None:
    return next((m for m in mailboxes if "\\sent" in m.attributes and m.selectable), None)


def find_by_name(mailboxes: list[Mailbox]) -> Mailbox | None:
    """The first common Sent name present, whatever the hierarchy delimiter and letter case."""

    def key(m: Mailbox) -> str:
        name = m.name.replace(m.delimiter, "/") if m.delimiter else m.name
        return name.casefold()

    by_key = {key(m): m for m in mailboxes if m.selectable}
    for candidate in COMMON_SENT_NAMES:
        found = by_key.get(candidate.casefold())
        if found is not None:
            return found
    return None


def wire_name(mailbox: Mailbox | str) -> str:
    """A mailbox name ready for a command: modified UTF-7, quoted only when it must be.

    Quoting only when needed: one Office 365 report has quoted names with ``&-`` hang the server.
    """
    name = mailbox.name if isinstance(mailbox, Mailbox) else mailbox
    encoded = encode_mutf7(name)
    if encoded and not _ATOM_SPECIALS.search(encoded):
        return encoded
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 §5.1.3): printable ASCII as is, "&" as "&-", the rest as
# UTF-16BE in base64 with "," for "/", between "&" and "-".


def encode_mutf7(text: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    def decode_run(found: re.Match[str]) -> str:
        run = found.group(1)
        if not run:
            return "&"
        b64 = run.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            return base64.b64decode(b64).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return found.group(0)  # not valid modified UTF-7: keep the name as the server sent it

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode_run, text)


# ---------------------------------------------------------------------------------------------
# Discovery over a logged-in connection


class ListingSession(Protocol):
    """What discovery needs from an IMAP connection (``sent_copy.ImapSession`` provides it)."""

    capabilities: set[str]

    async def list_lines(self, reference: str, pattern: str) -> list[bytes] | None: ...
    async def xlist_lines(self) -> list[bytes] | None: ...


@dataclass(frozen=True)
class Discovery:
    mailbox: Mailbox | None
    how: str  # "special-use in LIST", "LIST RETURN (SPECIAL-USE)", "XLIST", "name", "not found"


async def discover_sent_folder(session: ListingSession) -> Discovery:
    caps = {c.upper() for c in session.capabilities}
    listed = parse_list_response(await session.list_lines('""', '"*"') or [])
    found = find_by_attribute(listed)
    if found:
        return Discovery(found, "special-use in LIST")
    if caps & {"LIST-EXTENDED", "SPECIAL-USE"}:
        extended = parse_list_response(await session.list_lines('""', '"*" RETURN (SPECIAL-USE)') or [])
        found = find_by_attribute(extended)
        if found:
            return Discovery(found, "LIST RETURN (SPECIAL-USE)")
    if "XLIST" in caps:
        found = find_by_attribute(parse_list_response(await session.xlist_lines() or []))
        if found:
            return Discovery(found, "XLIST")
    found = find_by_name(listed)
    if found:
        return Discovery(found, "name")
    return Discovery(None, "not found")
