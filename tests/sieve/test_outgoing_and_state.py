"""What delivery sends for redirect and reject, and the tracking state it keeps."""
from __future__ import annotations

import email
import email.policy
import json

from correo_server.sieve import Envelope, Redirect, Reject, StateUpdate
from correo_server.sieve.message import MessageView
from correo_server.sieve.outgoing import GENERIC_REFUSAL, redirect_message, refusal_lines, reject_mdn
from correo_server.sieve.tracking import FileState, MemoryState

from .conftest import NOW, mail

MSG = mail("Received: from a by b; Mon, 4 Mar 2024 10:00:00 +0000\nFrom: bob@example.org\n"
           "To: ana@example.com\nSubject: hi\nMessage-ID: <m1@example.org>\n\nhello\n")


def test_redirect_adds_one_received_field_and_keeps_the_sender():
    out = redirect_message(MSG, Envelope("bob@example.org", "ana@example.com"), Redirect("ana@elsewhere.example"),
                           hostname="mail.example.com", now=NOW)
    assert out.sender == "bob@example.org" and out.recipients == ("ana@elsewhere.example",)
    assert out.data.endswith(MSG)
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    assert len(parsed.get_all("Received")) == 2
    assert "mail.example.com" in parsed.get_all("Received")[0]


def test_redirect_of_a_bounce_stays_a_bounce():
    out = redirect_message(MSG, Envelope("", "ana@example.com"), Redirect("x@example.net"), hostname="h", now=NOW)
    assert out.sender == ""


def test_refusal_lines_are_ascii_multiline_550_text():
    assert refusal_lines(Reject("AntiSpam engine thinks your message is spam.\r\nIt is therefore being refused.\r\n",
                                extended=True)) == ["5.7.1 AntiSpam engine thinks your message is spam.",
                                                    "5.7.1 It is therefore being refused."]
    assert refusal_lines(Reject("Nicht erwünscht", extended=True)) == [f"5.7.1 {GENERIC_REFUSAL}"]
    assert refusal_lines(Reject("Nicht erwünscht")) is None  # reject keeps its exact text: an MDN
    long = refusal_lines(Reject("word " * 300, extended=True))
    assert all(len(line) <= 510 for line in long) and len(long) >= 3


def test_reject_mdn_goes_to_the_sender_and_never_to_null():
    view = MessageView(MSG)
    env = Envelope("bob@example.org", "ana@example.com")
    out = reject_mdn(view, env, Reject("Nicht erwünscht"), mailbox="ana@example.com", hostname="h", now=NOW)
    assert out.sender == "" and out.recipients == ("bob@example.org",)
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "disposition-notification"
    assert parsed["Auto-Submitted"] == "auto-replied"
    human, report, headers = parsed.iter_parts()
    assert "Nicht erwünscht" in human.get_content()
    assert "deleted" in report.as_string() and "<m1@example.org>" in report.as_string()
    assert reject_mdn(view, Envelope("", "ana@example.com"), Reject("x"), mailbox="a", hostname="h", now=NOW) is None


def test_file_state_survives_a_restart_and_forgets_what_expired(tmp_path):
    path = tmp_path / "mbox" / "sieve-tracking.json"
    state = FileState(path)
    assert not state.seen("k1", NOW)
    state.record([StateUpdate("k1", NOW + 100), StateUpdate("k2", NOW + 10)], NOW)
    again = FileState(path)
    assert again.seen("k1", NOW + 50) and not again.seen("k1", NOW + 100)
    again.record([StateUpdate("k3", NOW + 500)], NOW + 20)
    assert set(json.loads(path.read_text())["entries"]) == {"k1", "k3"}  # k2 expired and dropped
    assert [p.name for p in path.parent.iterdir()] == ["sieve-tracking.json"]  # no temporary file left


def test_file_state_keeps_the_newest_entries_within_its_bound(tmp_path):
    state = FileState(tmp_path / "t.json", max_entries=1000)
    state.record([StateUpdate(f"k{i}", NOW + 1000 + i) for i in range(1500)], NOW)
    assert not state.seen("k0", NOW) and state.seen("k1499", NOW)
    assert len(json.loads((tmp_path / "t.json").read_text())["entries"]) == 1000


def test_a_damaged_state_file_forgets_but_never_blocks(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    state = FileState(path)
    assert not state.seen("k", NOW)
    state.record([StateUpdate("k", NOW + 1)], NOW)
    assert state.seen("k", NOW)


def test_memory_state_is_the_same_contract():
    state = MemoryState()
    state.record([StateUpdate("k", NOW + 1)], NOW)
    assert state.seen("k", NOW) and not state.seen("k", NOW + 1)
