"""The extensions with real clients: imapclient (its SORT, THREAD,
CONDSTORE/QRESYNC, MULTIAPPEND, special-use and STATUS support) and
aioimaplib as a second, asyncio client (ESEARCH, SORT, THREAD, QRESYNC,
IDLE) — and a long-running session in which another client's flag changes
and expunges arrive as FETCH ... MODSEQ and VANISHED."""
from __future__ import annotations

import asyncio
import re

import aioimaplib
import imapclient
import pytest

from ext_messages import mail
from imaptest_support import ALICE, PASSWORD, RawClient


def thread_mailbox(imap) -> None:
    imap.deliver(ALICE, mail("plan", msgid="p@x", date="Tue, 14 May 2024 10:00:00 +0000"))
    imap.deliver(ALICE, mail("Re: plan", msgid="r1@x", refs="p@x", date="Tue, 14 May 2024 11:00:00 +0000"))
    imap.deliver(ALICE, mail("agenda", msgid="a@x", date="Tue, 14 May 2024 09:00:00 +0000"))
    imap.deliver(ALICE, mail("Re: plan", msgid="r2@x", refs="p@x r1@x", date="Tue, 14 May 2024 12:00:00 +0000"))


@pytest.fixture
def client(imap):
    c = imapclient.IMAPClient("127.0.0.1", port=imap.port, ssl=False, timeout=30)
    c.login(ALICE, PASSWORD)
    yield c
    c.logout()


def test_imapclient_sort_and_thread(imap, client):
    thread_mailbox(imap)
    client.select_folder("INBOX")
    assert client.sort(["SUBJECT"]) == [3, 1, 2, 4]
    assert client.sort("REVERSE DATE") == [4, 2, 1, 3]
    assert client.sort(["SUBJECT"], ["NOT", "FROM", "nobody"]) == [3, 1, 2, 4]
    assert client.thread("REFERENCES") == ((3,), (1, 2, 4))
    assert client.thread("ORDEREDSUBJECT") == ((3,), (1, (2,), (4,)))


def test_imapclient_condstore_and_qresync(imap, client):
    thread_mailbox(imap)
    assert client.enable("QRESYNC") == [b"QRESYNC"]
    selected = client.select_folder("INBOX")
    since = selected[b"HIGHESTMODSEQ"]
    other = RawClient(imap.port)
    other.login()
    other.cmd("SELECT INBOX")
    other.cmd("STORE 1 +FLAGS (\\Flagged)")
    other.cmd("STORE 3 +FLAGS (\\Deleted)")
    other.cmd("EXPUNGE")
    other.close()
    client.noop()
    client._imap.untagged_responses.clear()
    changed = client.fetch([1, 2, 3, 4], ["FLAGS"], modifiers=[f"CHANGEDSINCE {since}", "VANISHED"])
    assert list(changed) == [1]
    assert changed[1][b"FLAGS"] == (b"\\Flagged", b"\\Recent") and changed[1][b"MODSEQ"][0] > since
    assert client._imap.untagged_responses["VANISHED"] == [b"(EARLIER) 3"]
    status = client.folder_status("INBOX", ["MESSAGES", "HIGHESTMODSEQ", "MAILBOXID"])
    assert status[b"MESSAGES"] == 3 and status[b"HIGHESTMODSEQ"] >= changed[1][b"MODSEQ"][0]
    assert status[b"MAILBOXID"][0].startswith(b"F")


def test_imapclient_multiappend_and_special_folders(imap, client):
    assert client.find_special_folder(imapclient.imapclient.SENT) == "Sent"
    typ, data = client.multiappend("Drafts", [b"Subject: one\r\n\r\n1\r\n",
                                              {"msg": b"Subject: two\r\n\r\n2\r\n", "flags": [b"\\Seen"]}])
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1:2\]", data[0])
    client.select_folder("Drafts", readonly=True)
    assert client.get_flags([1, 2]) == {1: (b"\\Recent",), 2: (b"\\Seen", b"\\Recent")}


def test_long_running_imapclient_session_hears_flags_and_expunges(imap, client):
    """A client in IDLE for long (QRESYNC on) while another works in the
    folder: each flag change comes as FETCH (UID FLAGS MODSEQ), each
    expunge as VANISHED, new mail as EXISTS — and a QRESYNC reselect later
    agrees."""
    for i in range(6):
        imap.deliver(ALICE, mail(f"m{i}"))
    client.enable("QRESYNC")
    start = client.select_folder("INBOX")
    other = RawClient(imap.port)
    other.login()
    other.cmd("SELECT INBOX")
    heard: list = []
    client.idle()
    for uid in (2, 4, 6):
        other.cmd(f"UID STORE {uid} +FLAGS (\\Seen)")
        other.cmd(f"UID STORE {uid - 1} +FLAGS (\\Deleted)")
        other.cmd(f"UID EXPUNGE {uid - 1}")
        imap.deliver(ALICE, mail(f"late {uid}"))
        for _ in range(20):
            heard += client.idle_check(timeout=2)
            if (b"VANISHED", uid - 1) in heard and any(r[1:2] == (b"EXISTS",) and r[0] == 6 for r in heard):
                break
    client.idle_done()
    other.close()
    fetches = [dict(zip(r[2][::2], r[2][1::2])) for r in heard if len(r) > 1 and r[1] == b"FETCH"]
    assert {f[b"UID"] for f in fetches if b"\\Seen" in f[b"FLAGS"]} == {2, 4, 6}
    assert all(b"MODSEQ" in f for f in fetches)
    assert [r for r in heard if r[0] == b"VANISHED"] == [(b"VANISHED", 1), (b"VANISHED", 3), (b"VANISHED", 5)]
    client._imap.untagged_responses.clear()
    client.unselect_folder()
    client._imap._simple_command("SELECT", "INBOX", f"(QRESYNC ({start[b'UIDVALIDITY']} {start[b'HIGHESTMODSEQ']}))")
    assert client._imap.untagged_responses["VANISHED"] == [b"(EARLIER) 1,3,5"]


# -- aioimaplib ------------------------------------------------------------------------------

def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def aio_client(imap):
    c = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port, timeout=30)
    await c.wait_hello_from_server()
    assert (await c.login(ALICE, PASSWORD)).result == "OK"
    return c


async def command(c, name: str, *args: str, untagged: str | None = None):
    p = c.protocol
    return await p.execute(aioimaplib.Command(name, p.new_tag(), *args, untagged_resp_name=untagged or name,
                                              loop=p.loop))


def test_aioimaplib_esearch_sort_thread(imap):
    thread_mailbox(imap)

    async def go():
        c = await aio_client(imap)
        assert "ESEARCH" in c.protocol.capabilities and "THREAD=REFERENCES" in c.protocol.capabilities
        await c.select("INBOX")
        r = await command(c, "SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL", untagged="ESEARCH")
        assert r.result == "OK" and re.fullmatch(rb'\(TAG "\w+"\) MIN 1 MAX 4 COUNT 4', r.lines[0])
        r = await command(c, "SORT", "(REVERSE SUBJECT)", "UTF-8", "ALL")
        assert r.lines[0] == b"1 2 4 3"
        r = await command(c, "THREAD", "REFERENCES", "UTF-8", "ALL")
        assert r.lines[0] == b"(3)(1 2 4)"
        await c.logout()

    run(go())


def test_aioimaplib_qresync_and_idle(imap):
    for i in range(4):
        imap.deliver(ALICE, mail(f"m{i}"))

    async def go():
        c = await aio_client(imap)
        assert (await c.enable("QRESYNC")).lines[0] == b"ENABLED QRESYNC"
        lines = (await c.select("INBOX")).lines
        validity = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(lines)).group(1))
        modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(lines)).group(1))
        idle = await c.idle_start(timeout=30)
        other = RawClient(imap.port)
        other.login()
        other.cmd("SELECT INBOX")
        other.cmd("STORE 2 +FLAGS (\\Deleted)")
        other.cmd("EXPUNGE")
        other.close()
        pushed: list[bytes] = []
        while not any(line.startswith(b"VANISHED") for line in pushed):
            pushed += await asyncio.wait_for(c.wait_server_push(), 20)
        c.idle_done()
        await asyncio.wait_for(idle, 20)
        assert b"VANISHED 2" in pushed
        await c.close()
        r = await command(c, "SELECT", "INBOX", f"(QRESYNC ({validity} {modseq}))", untagged="VANISHED")
        assert r.result == "OK" and b"VANISHED (EARLIER) 2" in r.lines
        await c.logout()

    run(go())
