"""What LMTP stores and POP3 shows, seen through IMAP too: BODY[] byte for
byte, and POP3 unique ids built from the UIDVALIDITY and UIDs IMAP reports."""
from __future__ import annotations

import imaplib
import poplib
import re

import pytest

from .delivery_support import ALICE, PASSWORDS, lmtp_deliver
from .test_lmtp_delivery import sample_message


@pytest.fixture
def mailstore(start_mailstore):
    return start_mailstore(imap_enabled=True)


def test_body_over_imap_and_retr_over_pop3_are_byte_identical(mailstore, monkeypatch):
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)
    message = sample_message()
    assert lmtp_deliver(mailstore.ports["lmtp"], "rene@example.org", [ALICE], message).replies[ALICE][0] == 250
    expected = b"Return-Path: <rene@example.org>\r\nDelivered-To: alice@example.com\r\n" + message

    imap = imaplib.IMAP4("127.0.0.1", mailstore.ports["imap"], timeout=30)
    imap.login(ALICE, PASSWORDS[ALICE])
    imap.select("INBOX", readonly=True)
    typ, data = imap.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == expected
    typ, data = imap.fetch("1", "(RFC822.SIZE)")
    assert f"RFC822.SIZE {len(expected)}".encode() in data[0]
    imap.logout()

    pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
    pop.user(ALICE)
    pop.pass_(PASSWORDS[ALICE])
    _, lines, _ = pop.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == expected
    pop.quit()


def test_pop3_unique_ids_are_imap_uidvalidity_and_uids(mailstore):
    for n in range(3):
        lmtp_deliver(mailstore.ports["lmtp"], "x@example.org", [ALICE], f"Subject: {n}\r\n\r\n{n}\r\n".encode())
    imap = imaplib.IMAP4("127.0.0.1", mailstore.ports["imap"], timeout=30)
    imap.login(ALICE, PASSWORDS[ALICE])
    imap.select("INBOX")
    uidvalidity = int(re.search(rb"\d+", imap.response("UIDVALIDITY")[1][0]).group())
    imap.store("2", "+FLAGS", "\\Deleted")
    imap.expunge()  # IMAP removes the second message; POP3 sees the other two
    _, data = imap.uid("SEARCH", "ALL")
    uids = [int(u) for u in data[0].split()]
    imap.logout()

    pop = poplib.POP3("127.0.0.1", mailstore.ports["pop3"], timeout=30)
    pop.user(ALICE)
    pop.pass_(PASSWORDS[ALICE])
    ids = [line.split()[1].decode() for line in pop.uidl()[1]]
    pop.quit()
    assert ids == [f"{uid:08X}{uidvalidity:08X}" for uid in uids]
    assert len(ids) == 2
