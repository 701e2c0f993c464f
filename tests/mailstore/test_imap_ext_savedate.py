"""SAVEDATE (RFC 8514): when a message was saved in its folder, not its
internal date — APPEND with an old date, COPY and MOVE each start a new
save date; flag changes do not — FETCH SAVEDATE and the SAVED* search
keys, with imapclient."""
from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, timezone

import imapclient

from ext_messages import mail, ok
from imaptest_support import ALICE, PASSWORD

OLD = datetime(2001, 5, 7, 12, 0, tzinfo=timezone.utc)


def saved(c, uid: int) -> datetime:
    value = c.fetch([uid], ["SAVEDATE"])[uid][b"SAVEDATE"]
    return datetime.strptime(value.decode().strip(), "%d-%b-%Y %H:%M:%S %z")


def test_save_dates_with_imapclient(imap):
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login(ALICE, PASSWORD)
    assert b"SAVEDATE" in c.capabilities()
    c.append("INBOX", mail("old letter"), msg_time=OLD)
    c.select_folder("INBOX")
    now = datetime.now(timezone.utc)
    first = saved(c, 1)
    assert abs((first - now).total_seconds()) < 120  # saved now, though its internal date is 2001
    assert c.fetch([1], ["INTERNALDATE"])[1][b"INTERNALDATE"].year == 2001
    today = first.date()
    assert c.search(["SAVEDON", today]) == [1]
    assert c.search(["SAVEDSINCE", today]) == [1]
    assert c.search(["SAVEDBEFORE", today]) == []
    assert c.search(["BEFORE", date(2002, 1, 1)]) == [1]  # the internal date is another thing
    assert c.search(["SAVEDATESUPPORTED"]) == [1]

    time.sleep(1.1)  # the save dates below must be later than the first, to the second
    c.add_flags([1], [imapclient.SEEN])
    assert saved(c, 1) == first  # a flag change is not a save
    c.copy([1], "Junk")
    c.move([1], "Trash")
    for folder in ("Junk", "Trash"):
        c.select_folder(folder)
        (uid,) = c.search()
        assert saved(c, uid) > first
        assert c.fetch([uid], ["INTERNALDATE"])[uid][b"INTERNALDATE"].year == 2001
    c.logout()


def test_the_fetch_item_on_the_wire(imap, raw):
    imap.deliver(ALICE, mail("delivered"))
    ok(raw, "SELECT INBOX")
    line = ok(raw, "FETCH 1 (SAVEDATE)")[0]
    assert re.fullmatch(rb'\* 1 FETCH \(SAVEDATE "[ 0-9]\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"\)\r\n',
                        line), line
    assert raw.cmd("SEARCH SAVEDON")[-1].startswith(b"t%d BAD " % raw.n)
    assert ok(raw, f"SEARCH SAVEDSINCE {(date.today() + timedelta(days=2)).strftime('%d-%b-%Y')}") == [
        b"* SEARCH\r\n"]
