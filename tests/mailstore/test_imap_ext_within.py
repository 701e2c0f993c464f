"""WITHIN (RFC 5032): YOUNGER and OLDER, in seconds before the search,
against the internal date — with imapclient (APPEND with a date, SEARCH)
and the RFC's example form on the wire."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import imapclient

from ext_messages import mail, ok
from imaptest_support import ALICE, PASSWORD


def test_younger_and_older_with_imapclient(imap):
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login(ALICE, PASSWORD)
    assert b"WITHIN" in c.capabilities()
    now = datetime.now(timezone.utc)
    for days in (30, 3, 0):
        c.append("INBOX", mail(f"{days} days old"), msg_time=now - timedelta(days=days, minutes=1))
    c.select_folder("INBOX")
    week = 7 * 24 * 3600
    assert c.search(["YOUNGER", week]) == [2, 3]  # the RFC's "last week"
    assert c.search(["OLDER", week]) == [1]
    assert c.search(["YOUNGER", 3600]) == [3]
    assert c.search(["OLDER", 3600, "YOUNGER", 5 * 24 * 3600]) == [2]
    assert c.search(["NOT", "OLDER", 40 * 24 * 3600]) == [1, 2, 3]
    c.logout()


def test_the_interval_is_a_positive_number_of_seconds(imap, raw):
    ok(raw, "SELECT INBOX")
    assert ok(raw, "SEARCH YOUNGER 1") == [b"* SEARCH\r\n"]
    for bad in ("SEARCH YOUNGER", "SEARCH OLDER 0", "SEARCH YOUNGER -5", "SEARCH OLDER 1d"):
        assert raw.cmd(bad)[-1].startswith(b"t%d BAD " % raw.n), bad
