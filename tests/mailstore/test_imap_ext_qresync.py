"""QRESYNC (RFC 7162 section 3.2): the RFC's examples against the running
server — SELECT ... (QRESYNC ...) with VANISHED (EARLIER) and the changed
flags, UID FETCH ... (CHANGEDSINCE n VANISHED), VANISHED instead of
EXPUNGE once enabled, OK [CLOSED] — and a long-running session that hears
of another session's flag changes and expunges as they happen."""
from __future__ import annotations

import re
import sqlite3

from correo_server.mailstore.index import INDEX_FILE
from ext_messages import mail, ok
from imaptest_support import ALICE, RawClient


def status(raw, items: str = "UIDVALIDITY HIGHESTMODSEQ") -> dict[str, int]:
    line = ok(raw, f"STATUS INBOX ({items})")[0]
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", line)}


def mailbox_of(imap, n: int) -> None:
    for i in range(1, n + 1):
        imap.deliver(ALICE, mail(f"message {i}"))


def other_session(imap) -> RawClient:
    other = RawClient(imap.port)
    other.login()
    assert ok(other, "SELECT INBOX")
    return other


def modseq_of(raw, seq: int) -> int:
    return int(re.search(rb"MODSEQ \((\d+)\)", ok(raw, f"FETCH {seq} MODSEQ")[0]).group(1))


def test_enable_qresync_enables_condstore_too(imap, raw):
    assert b" QRESYNC" in ok(raw, "CAPABILITY")[0]
    assert ok(raw, "ENABLE QRESYNC") == [b"* ENABLED QRESYNC\r\n"]
    assert ok(raw, "ENABLE CONDSTORE") == [b"* ENABLED\r\n"]  # already on


def test_select_with_qresync_reports_what_changed_since(imap, raw):
    """RFC 7162 3.2.5's example, in small: the client knew the folder at
    some MODSEQ; since then messages were expunged, flagged and delivered."""
    mailbox_of(imap, 10)
    known = status(raw)
    other = other_session(imap)
    ok(other, "STORE 2,4,6 +FLAGS.SILENT (\\Deleted)")
    ok(other, "EXPUNGE")                       # UIDs 2, 4, 6 go
    ok(other, "STORE 4 +FLAGS.SILENT (\\Seen)")  # UID 7 (now message 4)
    other.close()
    imap.deliver(ALICE, mail("new"))            # UID 11
    ok(raw, "ENABLE QRESYNC")
    lines = ok(raw, f"SELECT INBOX (QRESYNC ({known['UIDVALIDITY']} {known['HIGHESTMODSEQ']} 1:5,7:20))")
    assert b"* VANISHED (EARLIER) 2,4\r\n" in lines  # 6 is outside the known UIDs
    fetches = [ln for ln in lines if b" FETCH " in ln]
    assert fetches == [
        b"* 4 FETCH (UID 7 FLAGS (\\Seen) MODSEQ (%d))\r\n" % modseq_of(raw, 4),
        b"* 8 FETCH (UID 11 FLAGS (\\Recent) MODSEQ (%d))\r\n" % modseq_of(raw, 8),
    ]
    assert lines.index(b"* VANISHED (EARLIER) 2,4\r\n") > lines.index(
        next(ln for ln in lines if b"[HIGHESTMODSEQ" in ln))


def test_select_with_another_uidvalidity_is_an_ordinary_select(imap, raw):
    mailbox_of(imap, 3)
    ok(raw, "ENABLE QRESYNC")
    lines = ok(raw, "SELECT INBOX (QRESYNC (1 1))")
    assert not [ln for ln in lines if b"VANISHED" in ln or b"FETCH" in ln]


def test_qresync_parameter_needs_enable_first(imap, raw):
    mailbox_of(imap, 1)
    assert raw.cmd("SELECT INBOX (QRESYNC (1 1))")[-1] == (
        b"t%d BAD QRESYNC is not enabled (ENABLE QRESYNC first)\r\n" % raw.n)
    ok(raw, "ENABLE QRESYNC")
    assert raw.cmd("SELECT INBOX (QRESYNC (1 1 1:*))")[-1].startswith(b"t%d BAD " % raw.n)
    assert raw.cmd("SELECT INBOX (QRESYNC (1))")[-1].startswith(b"t%d BAD " % raw.n)


def test_uid_fetch_changedsince_vanished(imap, raw):
    """RFC 7162 3.2.6's example: UID FETCH 300:500 (FLAGS) (CHANGEDSINCE
    12345 VANISHED) — the expunged UIDs of the set first, then the changes."""
    mailbox_of(imap, 8)
    ok(raw, "ENABLE QRESYNC")
    ok(raw, "SELECT INBOX")
    since = status(raw)["HIGHESTMODSEQ"]
    other = other_session(imap)
    ok(other, "STORE 1,3,7 +FLAGS.SILENT (\\Deleted)")
    ok(other, "UID EXPUNGE 3,7")
    other.close()
    ok(raw, "NOOP")
    changed = modseq_of(raw, 1)
    lines = ok(raw, f"UID FETCH 2:8 (FLAGS) (CHANGEDSINCE {since} VANISHED)")
    assert lines == [b"* VANISHED (EARLIER) 3,7\r\n"]  # UID 1 changed, but is not in 2:8
    assert ok(raw, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)") == [
        b"* VANISHED (EARLIER) 3,7\r\n", b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent) MODSEQ (%d))\r\n" % changed]
    assert raw.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)")[-1] == (
        b"t%d BAD VANISHED needs UID FETCH\r\n" % raw.n)
    assert raw.cmd("UID FETCH 1:* (FLAGS) (VANISHED)")[-1] == b"t%d BAD VANISHED needs CHANGEDSINCE\r\n" % raw.n


def test_vanished_replaces_expunge_once_enabled(imap, raw):
    mailbox_of(imap, 6)
    ok(raw, "ENABLE QRESYNC")
    ok(raw, "SELECT INBOX")
    ok(raw, "STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    assert ok(raw, "EXPUNGE") == [b"* VANISHED 1:2\r\n"]
    assert ok(raw, "MOVE 1 Trash")[1:] == [b"* VANISHED 3\r\n"]
    other = other_session(imap)
    ok(other, "STORE 1 +FLAGS.SILENT (\\Deleted)")
    ok(other, "EXPUNGE")
    other.close()
    assert ok(raw, "NOOP") == [b"* VANISHED 4\r\n"]
    lines = ok(raw, "SELECT Trash")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed.\r\n"


def test_an_old_index_reports_every_missing_uid(imap, raw):
    """Expunges from before the index kept them: every UID not in the
    folder is reported (allowed by RFC 7162 3.2.5.2), less those below a
    matching sequence-match pair."""
    mailbox_of(imap, 8)
    folder = imap.folder(ALICE)
    imap.call(folder.expunge([2, 5]))
    known = status(raw)
    db = sqlite3.connect(folder.path / INDEX_FILE)
    db.execute("UPDATE meta SET value = ? WHERE key = 'vanished_from'", (known["HIGHESTMODSEQ"] + 100,))
    db.commit()
    db.close()
    ok(raw, "ENABLE QRESYNC")
    lines = ok(raw, f"SELECT INBOX (QRESYNC ({known['UIDVALIDITY']} {known['HIGHESTMODSEQ']}))")
    assert b"* VANISHED (EARLIER) 2,5\r\n" in lines
    # the client knows message 3 is UID 4: nothing below UID 4 needs telling
    lines = ok(raw, f"SELECT INBOX (QRESYNC ({known['UIDVALIDITY']} {known['HIGHESTMODSEQ']} 1:8 (1,3 1,4)))")
    assert b"* VANISHED (EARLIER) 5\r\n" in lines


def test_long_running_session_hears_of_flags_and_expunges_from_another(imap, raw):
    """A client in IDLE for a long time (QRESYNC on): another session's
    STORE arrives as FETCH (UID FLAGS MODSEQ), its EXPUNGE as VANISHED, new
    mail as EXISTS — each as it happens, in order — and a resync later with
    SELECT (QRESYNC ...) agrees with what it heard."""
    mailbox_of(imap, 5)
    ok(raw, "ENABLE QRESYNC")
    ok(raw, "SELECT INBOX")
    raw.sock.settimeout(30)
    other = other_session(imap)
    heard: list[bytes] = []
    for round_ in range(3):
        raw.send(b"i%d IDLE\r\n" % round_)
        assert raw.readline() == b"+ idling\r\n"
        ok(other, f"UID STORE {round_ + 1} +FLAGS (\\Flagged)")
        line = raw.readline()
        assert re.fullmatch(rb"\* %d FETCH \(UID %d FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)\r\n"
                            % (1, round_ + 1), line), line
        heard.append(line)
        ok(other, f"UID STORE {round_ + 1} +FLAGS.SILENT (\\Deleted)")
        assert re.match(rb"\* 1 FETCH \(UID %d FLAGS \(\\Flagged \\Deleted \\Recent\) MODSEQ" % (round_ + 1),
                        raw.readline())
        ok(other, f"UID EXPUNGE {round_ + 1}")
        assert raw.readline() == b"* VANISHED %d\r\n" % (round_ + 1)
        imap.deliver(ALICE, mail(f"late {round_}"))
        assert raw.readline() == b"* 5 EXISTS\r\n"
        assert re.fullmatch(rb"\* \d+ RECENT\r\n", raw.readline())
        raw.send(b"DONE\r\n")
        assert raw.read_response(b"i%d" % round_)[-1].startswith(b"i%d OK" % round_)
    other.close()
    known = status(raw)
    assert ok(raw, "UID SEARCH ALL") == [b"* SEARCH 4 5 6 7 8\r\n"]
    lines = ok(raw, f"SELECT INBOX (QRESYNC ({known['UIDVALIDITY']} 1))")
    assert b"* VANISHED (EARLIER) 1:3\r\n" in lines
