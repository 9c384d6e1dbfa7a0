"""Messages that come back, in the shapes real servers send them, for the inbox-sync tests.

Each builder returns CRLF bytes ready for IMAP APPEND. ``mid`` is the Message-ID we sent;
``rcpt`` the recipient it went to; ``n`` makes the incoming message's own Message-ID unique.
The MTA formats follow what these servers write (RFC 3464 DSNs from Postfix, Gmail and Microsoft
365; Exim's and qmail's own plain-text formats).
"""

from __future__ import annotations

SENDER = "alice@sender.test"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def _original_headers(rcpt: str, mid: str) -> str:
    return (
        f"From: Alice <{SENDER}>\nTo: {rcpt}\nSubject: Quick question\n"
        f"Date: Tue, 01 Dec 2026 10:00:00 +0000\nMessage-ID: {mid}\n"
    )


def postfix_dsn(rcpt: str, mid: str, n: int, *, action: str = "failed", status: str = "5.1.1") -> bytes:
    diagnostic = (
        "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown in virtual mailbox table"
        if action == "failed"
        else "smtp; 451 4.4.1 Connection timed out"
    ).format(r=rcpt)
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    return _crlf(f"""Return-Path: <>
From: MAILER-DAEMON@mx.sender.test (Mail Delivery System)
To: {SENDER}
Subject: {subject}
Date: Tue, 01 Dec 2026 10:01:00 +0000
Message-ID: <dsn-postfix-{n}@mx.sender.test>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.sender.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.sender.test
X-Postfix-Queue-ID: 4F1A2B3C
Arrival-Date: Tue,  1 Dec 2026 10:00:00 +0000 (UTC)

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.receiver.test
Diagnostic-Code: {diagnostic}

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

{_original_headers(rcpt, mid)}
--B1--
""")


def gmail_dsn(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {SENDER}
Subject: Delivery Status Notification (Failure)
Date: Tue, 01 Dec 2026 10:02:00 +0000
Message-ID: <dsn-gmail-{n}@mx.google.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; boundary="G1"; report-type=delivery-status

--G1
Content-Type: text/plain; charset="UTF-8"

** Address not found **

Your message wasn't delivered to {rcpt} because the address couldn't be found,
or is unable to receive mail.

--G1
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Tue, 01 Dec 2026 02:01:59 -0800 (PST)

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.receiver.test. (192.0.2.25, the server for the domain.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.
Last-Attempt-Date: Tue, 01 Dec 2026 02:02:00 -0800 (PST)

--G1
Content-Type: message/rfc822

{_original_headers(rcpt, mid)}
Hello there.
--G1--
""")


def microsoft_ndr(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: postmaster@outlook.com
To: {SENDER}
Subject: Undeliverable: Quick question
Date: Tue, 01 Dec 2026 10:03:00 +0000
Message-ID: <ndr-ms-{n}@DM6PR01MB.namprd01.prod.outlook.com>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="M1"

--M1
Content-Type: text/plain; charset="us-ascii"

Your message to {rcpt} couldn't be delivered.
{rcpt.split("@")[0]} wasn't found at {rcpt.split("@")[1]}.

--M1
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR01MB.namprd01.prod.outlook.com
Received-From-MTA: dns;mail.sender.test
Arrival-Date: Tue, 1 Dec 2026 10:02:58 +0000

Original-Recipient: rfc822;{rcpt}
Final-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--M1
Content-Type: message/rfc822

{_original_headers(rcpt, mid)}
Hello there.
--M1--
""")


def exim_bounce(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.sender.test>
To: {SENDER}
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1exim-{n}@mx.sender.test>
X-Failed-Recipients: {rcpt}
Auto-Submitted: auto-replied
Date: Tue, 01 Dec 2026 10:04:00 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    host mx.receiver.test [192.0.2.25]
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    550 5.1.1 No such user here

------ This is a copy of the message, including all the headers. ------

{_original_headers(rcpt, mid)}
Hello there.
""")


def qmail_bounce(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: MAILER-DAEMON@mx.sender.test
To: {SENDER}
Subject: failure notice
Message-ID: <qmail-{n}@mx.sender.test>
Date: Tue, 01 Dec 2026 10:05:00 +0000

Hi. This is the qmail-send program at mx.sender.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 Mailbox does not exist
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

{_original_headers(rcpt, mid)}
Hello there.
""")


def exim_delay_warning(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: Mail Delivery System <Mailer-Daemon@mx.sender.test>
To: {SENDER}
Subject: Warning: message 1exim-{n} delayed 24 hours
Message-Id: <E1delay-{n}@mx.sender.test>
Auto-Submitted: auto-replied
Date: Tue, 01 Dec 2026 10:06:00 +0000

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.sender.test.

The message identifier is:     1exim-{n}
The subject of the message is: Quick question
The date of the message is:    Tue, 01 Dec 2026 10:00:00 +0000

The address to which the message has not yet been delivered is:

  {rcpt}

No action is required on your part. Delivery attempts will continue for
some time, and this warning may be repeated at intervals if the message
remains undelivered.

{_original_headers(rcpt, mid)}
""")


def arf_report(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: {SENDER}
Subject: FW: Quick question
Date: Tue, 01 Dec 2026 11:00:00 +0000
Message-ID: <arf-{n}@arf.mail.yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A1"

--A1
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP
192.0.2.10 on Tue, 01 Dec 2026 10:00:05 +0000.

--A1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{SENDER}>
Original-Rcpt-To: <{rcpt}>
Arrival-Date: Tue, 01 Dec 2026 10:00:05 +0000
Reported-Domain: sender.test
Source-IP: 192.0.2.10

--A1
Content-Type: message/rfc822
Content-Disposition: inline

{_original_headers(rcpt, mid)}
Hello there.
--A1--
""")


def out_of_office(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: {rcpt}
To: {SENDER}
Subject: Automatic reply: Quick question
Date: Tue, 01 Dec 2026 10:07:00 +0000
Message-ID: <ooo-{n}@receiver.test>
In-Reply-To: {mid}
References: {mid}
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
Content-Type: text/plain; charset=us-ascii

I am out of the office until Monday.
""")


def reply(rcpt: str, mid: str, n: int) -> bytes:
    return _crlf(f"""From: Bob Buyer <{rcpt}>
To: {SENDER}
Subject: Re: Quick question
Date: Tue, 01 Dec 2026 12:00:00 +0000
Message-ID: <reply-{n}@receiver.test>
In-Reply-To: {mid}
References: <earlier@receiver.test> {mid}
Content-Type: text/plain; charset=us-ascii

Sounds good, let's talk on Thursday.
""")


def ordinary(n: int) -> bytes:
    return _crlf(f"""From: Carol <carol@friend.test>
To: {SENDER}
Subject: Lunch?
Date: Tue, 01 Dec 2026 09:00:00 +0000
Message-ID: <ordinary-{n}@friend.test>
Content-Type: text/plain; charset=us-ascii

Lunch on Friday?
""")


# MTA → builder → the bounce kind it must come out as (the table in docs/feedback.md).
BOUNCE_FORMATS = {
    "Postfix (RFC 3464, 5.1.1)": (postfix_dsn, "hard_bounce"),
    "Gmail (RFC 3464, 5.1.1)": (gmail_dsn, "hard_bounce"),
    "Microsoft 365 (RFC 3464, 5.1.10)": (microsoft_ndr, "hard_bounce"),
    "Exim (X-Failed-Recipients)": (exim_bounce, "hard_bounce"),
    "qmail (QSBMF)": (qmail_bounce, "hard_bounce"),
    "Postfix delayed (RFC 3464, 4.4.1)": (
        lambda r, m, n: postfix_dsn(r, m, n, action="delayed", status="4.4.1"),
        "soft_bounce",
    ),
    "Exim delay warning": (exim_delay_warning, "soft_bounce"),
}
