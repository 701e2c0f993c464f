"""PARTIAL (RFC 9394): pages of a SEARCH result and of a FETCH, from the
start (1:50) or from the end (-1:-50) — on the wire as the RFC shows it,
UID FETCH ... (PARTIAL) with imapclient's FETCH modifiers, and the
search with aioimaplib."""
from __future__ import annotations

import asyncio
import re

import aioimaplib
import imapclient

from ext_messages import mail, ok
from imaptest_support import ALICE, PASSWORD


ALL = list(range(1, 11))


def ten(imap) -> None:
    for i in range(10):
        imap.deliver(ALICE, mail(f"m{i}"))


def esearch(raw, command: str) -> bytes:
    (line,) = ok(raw, command)
    return re.sub(rb'\(TAG "t\d+"\) ', b"", line)


def test_search_pages_from_either_end(imap, raw):
    ten(imap)
    assert b" PARTIAL" in ok(raw, "CAPABILITY")[0]
    ok(raw, "SELECT INBOX")
    ok(raw, "STORE 2,9 +FLAGS.SILENT (\\Deleted)")  # UNDELETED: 1 3 4 5 6 7 8 10
    assert esearch(raw, "UID SEARCH RETURN (PARTIAL 1:5) UNDELETED") == b"* ESEARCH UID PARTIAL (1:5 1,3:6)\r\n"
    assert esearch(raw, "UID SEARCH RETURN (PARTIAL -1:-3) UNDELETED") == b"* ESEARCH UID PARTIAL (-1:-3 7:8,10)\r\n"
    assert esearch(raw, "UID SEARCH RETURN (PARTIAL -3:-1) UNDELETED") == b"* ESEARCH UID PARTIAL (-1:-3 7:8,10)\r\n"
    assert esearch(raw, "SEARCH RETURN (PARTIAL -7:-100 COUNT) UNDELETED") == (
        b"* ESEARCH PARTIAL (-7:-100 1,3) COUNT 8\r\n")  # the first two of eight
    assert esearch(raw, "SEARCH RETURN (PARTIAL -9:-20) UNDELETED") == b"* ESEARCH PARTIAL (-9:-20 NIL)\r\n"
    for bad in ("PARTIAL 1:-3", "PARTIAL -0:-3", "PARTIAL -1"):
        assert raw.cmd(f"SEARCH RETURN ({bad}) ALL")[-1].startswith(b"t%d BAD " % raw.n), bad


def test_fetch_pages_with_imapclient(imap):
    ten(imap)
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login(ALICE, PASSWORD)
    assert b"PARTIAL" in c.capabilities()
    c.select_folder("INBOX")
    newest = c.fetch(ALL, ["FLAGS"], modifiers=["PARTIAL -1:-3"])
    assert sorted(newest) == [8, 9, 10]
    assert sorted(c.fetch(ALL, ["UID"], modifiers=["PARTIAL 2:4"])) == [2, 3, 4]
    # counted among what CHANGEDSINCE keeps: the last two changed messages
    modseq = max(v[b"MODSEQ"][0] for v in c.fetch(ALL, ["MODSEQ"]).values())
    c.add_flags([2, 4, 6], [imapclient.FLAGGED])
    changed = c.fetch(ALL, ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}", "PARTIAL -1:-2"])
    assert sorted(changed) == [4, 6]
    c.logout()


def test_search_pages_with_aioimaplib(imap):
    ten(imap)

    async def go():
        c = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port, timeout=30)
        await c.wait_hello_from_server()
        assert (await c.login(ALICE, PASSWORD)).result == "OK"
        await c.select("INBOX")
        p = c.protocol
        r = await p.execute(aioimaplib.Command("UID", p.new_tag(), "SEARCH", "RETURN", "(PARTIAL -1:-4)", "ALL",
                                               untagged_resp_name="ESEARCH", loop=p.loop))
        assert r.result == "OK" and re.fullmatch(rb'\(TAG "\w+"\) UID PARTIAL \(-1:-4 7:10\)', r.lines[0])
        await c.logout()

    asyncio.run(asyncio.wait_for(go(), 60))
