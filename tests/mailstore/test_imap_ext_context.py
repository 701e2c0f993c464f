"""CONTEXT=SEARCH (RFC 5267): SEARCH RETURN (PARTIAL m:n) pages through a
result; SEARCH RETURN (UPDATE) keeps a search on screen up to date with
ADDTO/REMOVEFROM as this and other sessions change the folder, until
CANCELUPDATE.  aioimaplib (a real asyncio client) sits in IDLE and gets
the updates another session causes.  (imaptest's search-partial and
search-context-update groups run in test_imaptest.py.)"""
from __future__ import annotations

import asyncio
import re

import aioimaplib

from ext_messages import mail, ok, send_with_literals
from imaptest_support import ALICE, PASSWORD, RawClient


def said(raw, command: str) -> list[bytes]:
    """The untagged lines of a command that must succeed, ESEARCH tags as "T"."""
    return [re.sub(rb'\(TAG "t\d+"\)', b'(TAG "T")', line) for line in ok(raw, command)]


def five(imap) -> None:
    for i in range(5):
        imap.deliver(ALICE, mail(f"m{i}", body=f"body {i}\r\n"))


def test_partial_pages_through_the_result(imap, raw):
    five(imap)
    assert b" CONTEXT=SEARCH" in ok(raw, "CAPABILITY")[0]
    ok(raw, "SELECT INBOX")
    assert said(raw, "SEARCH RETURN (PARTIAL 1:2) ALL") == [b'* ESEARCH (TAG "T") PARTIAL (1:2 1:2)\r\n']
    assert said(raw, "SEARCH RETURN (PARTIAL 4:2) ALL") == [b'* ESEARCH (TAG "T") PARTIAL (2:4 2:4)\r\n']
    assert said(raw, "SEARCH RETURN (PARTIAL 2:3) 1,3:5") == [b'* ESEARCH (TAG "T") PARTIAL (2:3 3:4)\r\n']
    assert said(raw, "SEARCH RETURN (PARTIAL 6:9) ALL") == [b'* ESEARCH (TAG "T") PARTIAL (6:9 NIL)\r\n']
    assert said(raw, "UID SEARCH RETURN (PARTIAL 5:5 COUNT) ALL") == [
        b'* ESEARCH (TAG "T") UID PARTIAL (5:5 5) COUNT 5\r\n']
    for bad in ("PARTIAL 1", "PARTIAL 1:*", "PARTIAL 0:3", "PARTIAL -1:3"):
        assert raw.cmd(f"SEARCH RETURN ({bad}) ALL")[-1].startswith(b"t%d BAD " % raw.n), bad


def test_update_follows_this_sessions_changes_and_expunges(imap, raw):
    """The RFC's SEARCH RETURN (UPDATE) flow: the result is reported empty,
    then what starts and stops matching — REMOVEFROM of an expunged message
    before its EXPUNGE, while its number still holds."""
    five(imap)
    ok(raw, "SELECT INBOX")
    assert said(raw, "SEARCH RETURN (UPDATE) SEEN") == [b'* ESEARCH (TAG "T")\r\n']
    kept = raw.n
    assert said(raw, "STORE 1,2,4 +FLAGS.SILENT (\\Seen)") == [b'* ESEARCH (TAG "T") ADDTO (1 1:2,4)\r\n']
    assert said(raw, "STORE 1 -FLAGS.SILENT (\\Seen)") == [b'* ESEARCH (TAG "T") REMOVEFROM (1 1)\r\n']
    ok(raw, "STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert said(raw, "EXPUNGE") == [b'* ESEARCH (TAG "T") REMOVEFROM (2 4)\r\n', b"* 4 EXPUNGE\r\n"]
    new = b"Subject: x\r\n\r\nbody\r\n"
    lines = send_with_literals(raw, b"A1", [b"APPEND INBOX (\\Seen) {%d}\r\n" % len(new), new])
    assert lines[-1].startswith(b"A1 OK [APPENDUID ")
    assert lines[:-1] == [b"* 5 EXISTS\r\n", b"* 5 RECENT\r\n", b'* ESEARCH (TAG "t%d") ADDTO (2 5)\r\n' % kept]
    ok(raw, f'CANCELUPDATE "t{kept}"')
    assert said(raw, "STORE 1 +FLAGS.SILENT (\\Seen)") == []  # no longer followed
    assert raw.cmd(f'CANCELUPDATE "t{kept}"')[-1].startswith(b"t%d BAD " % raw.n)


def test_uid_updates_and_the_end_of_the_selection(imap, raw):
    five(imap)
    ok(raw, "SELECT INBOX")
    ok(raw, "STORE 1:2 +FLAGS.SILENT (\\Seen)")
    assert said(raw, "UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT m4") == [
        b'* ESEARCH (TAG "T") UID ALL 1:2,5\r\n']
    assert said(raw, "STORE 3 +FLAGS.SILENT (\\Seen)") == [b'* ESEARCH (TAG "T") UID ADDTO (3 3)\r\n']
    ok(raw, "UNSELECT")
    ok(raw, "SELECT INBOX")
    assert said(raw, "STORE 4 +FLAGS.SILENT (\\Seen)") == []  # a new selection follows nothing


def test_a_session_keeps_a_bounded_number_of_updates(imap, raw):
    ok(raw, "SELECT INBOX")
    for _ in range(10):
        ok(raw, "SEARCH RETURN (UPDATE) SEEN")
    reply = raw.cmd("SEARCH RETURN (UPDATE) SEEN")[-1]
    assert reply.startswith(b't%d NO [NOUPDATE "t%d"] ' % (raw.n, raw.n)), reply


def test_update_from_another_session_reaches_aioimaplib_in_idle(imap):
    five(imap)

    async def go():
        c = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port, timeout=30)
        await c.wait_hello_from_server()
        assert (await c.login(ALICE, PASSWORD)).result == "OK"
        assert "CONTEXT=SEARCH" in c.protocol.capabilities
        await c.select("INBOX")
        p = c.protocol
        r = await p.execute(aioimaplib.Command("UID", p.new_tag(), "SEARCH", "RETURN", "(UPDATE ALL)", "FLAGGED",
                                               untagged_resp_name="ESEARCH", loop=p.loop))
        assert r.result == "OK"
        idle = await c.idle_start(timeout=30)
        other = RawClient(imap.port)
        other.login()
        other.cmd("SELECT INBOX")
        other.cmd("STORE 2,5 +FLAGS (\\Flagged)")
        pushed: list[bytes] = []
        while not any(b"ADDTO" in line for line in pushed):
            pushed += await asyncio.wait_for(c.wait_server_push(), 20)
        other.cmd("STORE 2 -FLAGS (\\Flagged)")
        while not any(b"REMOVEFROM" in line for line in pushed):
            pushed += await asyncio.wait_for(c.wait_server_push(), 20)
        other.close()
        c.idle_done()
        await asyncio.wait_for(idle, 20)
        updates = [line for line in pushed if line.startswith(b"ESEARCH")]
        assert [re.sub(rb'TAG "\w+"', b'TAG "x"', u) for u in updates] == [
            b'ESEARCH (TAG "x") UID ADDTO (1 2,5)', b'ESEARCH (TAG "x") UID REMOVEFROM (1 2)']
        await c.logout()

    asyncio.run(asyncio.wait_for(go(), 60))
