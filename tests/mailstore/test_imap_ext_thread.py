"""THREAD (RFC 5256): ORDEREDSUBJECT and REFERENCES against the running
server — the RFC's response syntax, dummy parents, subject gathering,
search keys and UIDs — and a reply chain far deeper than Python's
recursion limit."""
from __future__ import annotations

from ext_messages import at, mail, ok
from imaptest_support import ALICE


def deliver_all(imap, messages) -> None:
    for m in messages:
        imap.deliver(ALICE, m)


def test_thread_capabilities(imap, raw):
    caps = ok(raw, "CAPABILITY")[0].split()
    assert b"THREAD=ORDEREDSUBJECT" in caps and b"THREAD=REFERENCES" in caps


def test_orderedsubject(imap, raw):
    """RFC 5256 ORDEREDSUBJECT: one thread per base subject; its first
    message (by sent date) is the parent of all the others; threads in the
    order of their first message."""
    deliver_all(imap, [
        mail("b", date=at(1)), mail("a", date=at(3)), mail("Re: b", date=at(2)),
        mail("a", date=at(4)), mail("c", date=at(0)), mail("re: a", date=at(5)),
    ])
    raw.cmd("SELECT INBOX")
    assert ok(raw, "THREAD ORDEREDSUBJECT UTF-8 ALL") == [b"* THREAD (5)(1 3)(2 (4)(6))\r\n"]
    assert ok(raw, "THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT c") == [b"* THREAD (1 3)(2 (4)(6))\r\n"]
    assert ok(raw, 'THREAD ORDEREDSUBJECT US-ASCII TEXT "gewp"') == [b"* THREAD\r\n"]


def references_mailbox(imap) -> None:
    deliver_all(imap, [
        mail("one", msgid="a", date=at(1)),                                   # 1
        mail("two", msgid="b", date=at(2)),                                   # 2
        mail("Re: two", msgid="c", refs="b", date=at(3)),                     # 3
        mail("Re: two", msgid="d", refs="b c", date=at(4)),                   # 4
        mail("Re: two", msgid="e", refs="b c", date=at(5)),                   # 5
        mail("Re: two", msgid="f", refs="b c e", date=at(6)),                 # 6
        mail("Re: two", msgid="g", refs="b c d", date=at(7)),                 # 7
        mail("Re: two", msgid="h", reply_to_id="e", date=at(8)),              # 8: In-Reply-To only
        mail("three", msgid="i", refs="missing", date=at(9)),                 # 9: parent never seen
        mail("Re: three", msgid="j", refs="missing", date=at(10)),            # 10
        mail("Re: one", msgid="k", date=at(11)),                              # 11: no references
        mail("four", msgid="l", date=at(12)),                                 # 12
        mail("four", msgid="m", date=at(13)),                                 # 13
        mail("five", msgid="n", refs="gone", date=at(14)),                    # 14
    ])


def test_references(imap, raw):
    """RFC 5256 REFERENCES: linked by References and In-Reply-To; a parent
    never seen stays as a dummy at the top when it has several children
    ``((9)(10))``; a reply without references joins the thread of its base
    subject ``(1 11)``; two non-replies with one subject go under a dummy;
    a lone child of a missing parent is promoted."""
    references_mailbox(imap)
    raw.cmd("SELECT INBOX")
    assert ok(raw, "THREAD REFERENCES UTF-8 ALL") == [
        b"* THREAD (1 11)(2 3 (4 7)(5 (6)(8)))((9)(10))((12)(13))(14)\r\n"]


def test_references_of_found_messages_and_uids(imap, raw):
    references_mailbox(imap)
    raw.cmd("SELECT INBOX")
    raw.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("EXPUNGE")
    # message "a" is gone: "Re: one" stands alone; numbers shift by one
    assert ok(raw, "THREAD REFERENCES UTF-8 1:7") == [b"* THREAD (1 2 (3 6)(4 (5)(7)))\r\n"]
    assert ok(raw, "UID THREAD REFERENCES UTF-8 UID 2:8") == [b"* THREAD (2 3 (4 7)(5 (6)(8)))\r\n"]
    assert ok(raw, "UID THREAD REFERENCES UTF-8 SUBJECT three") == [b"* THREAD ((9)(10))\r\n"]


def test_loops_in_references_are_not_followed(imap, raw):
    """RFC 5256 step 1: a link that would make a loop is not made; the
    message's own References replace a parent guessed from others."""
    deliver_all(imap, [
        mail(None, msgid="a@b", date=at(3)),
        mail(None, msgid="b@b", refs="a@b c@b", date=at(1)),
        mail(None, msgid="c@b", refs="b@b", date=at(2)),
    ])
    raw.cmd("SELECT INBOX")
    assert ok(raw, "THREAD REFERENCES US-ASCII ALL") == [b"* THREAD (3 2)(1)\r\n"]
    raw.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
    raw.cmd("EXPUNGE")
    # "c" is gone: "b" hangs below "a" through the dummy left for "c", which is pruned
    assert ok(raw, "THREAD REFERENCES US-ASCII ALL") == [b"* THREAD (1 2)\r\n"]


def test_thread_errors(imap, raw):
    deliver_all(imap, [mail("a")])
    raw.cmd("SELECT INBOX")
    assert raw.cmd("THREAD REFERENCES KOI8-R ALL")[-1] == (
        b"t%d NO [BADCHARSET (US-ASCII UTF-8)] Unsupported charset.\r\n" % raw.n)
    assert raw.cmd("THREAD BYDATE UTF-8 ALL")[-1] == (
        b"t%d BAD Error in IMAP command THREAD: Unknown threading algorithm BYDATE "
        b"(ORDEREDSUBJECT or REFERENCES)\r\n" % raw.n)
    assert raw.cmd("THREAD REFERENCES")[-1].startswith(b"t%d BAD " % raw.n)


def test_a_reply_chain_deeper_than_the_recursion_limit(imap, raw):
    depth = 1500
    msgs = [mail("chain", msgid="m0", date=at(0))]
    for i in range(1, depth):
        msgs.append(mail("Re: chain", msgid=f"m{i}", refs=f"m0 m{i - 1}", date=at(i % 60, hour=10 + i // 60 % 10)))
    folder = imap.folder(ALICE)
    imap.call(folder.append_many(msgs))
    raw.cmd("SELECT INBOX")
    expected = b"* THREAD (" + b" ".join(b"%d" % n for n in range(1, depth + 1)) + b")\r\n"
    assert ok(raw, "THREAD REFERENCES UTF-8 ALL") == [expected]
