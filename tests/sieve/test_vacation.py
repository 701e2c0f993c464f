"""Vacation replies follow RFC 3834: who gets one, how often, and what it looks like."""
from __future__ import annotations

import email
import email.policy

import pytest

from correo_server.sieve import Envelope, Vacation
from correo_server.sieve.message import MessageView
from correo_server.sieve.tracking import FileState
from correo_server.sieve.vacation import VacationRequest, decide

from .conftest import NOW, mail, sieve

DAY = 86400
ANA = "ana@example.com"
SCRIPT = 'require "vacation";\nvacation :days 7 "I am away until Monday.";'


def incoming(extra: str = "", to: str = ANA, frm: str = "bob@example.org") -> bytes:
    return mail(f"From: Bob <{frm}>\nTo: {to}\nSubject: lunch?\nMessage-ID: <m1@example.org>\n"
                f"References: <m0@example.org>\n{extra}\nAre you free?\n")


def vacation(msg: bytes, sender: str = "bob@example.org", **kw) -> Vacation:
    kw.setdefault("recipient", ANA)
    (vac,) = sieve(kw.pop("script", SCRIPT), msg, sender=sender, **kw).of(Vacation)
    return vac


@pytest.mark.parametrize("extra,sender,to,reason", [
    ("", "bob@example.org", ANA, "Reply"),
    ("", "", ANA, "NullSender"),
    ("", ANA, ANA, "OwnAddress"),
    ("", "ana.alias@example.com", ANA, "OwnAddress"),
    ("", "MAILER-DAEMON@example.org", ANA, "AutomatedSender"),
    ("", "owner-list@lists.example.org", ANA, "AutomatedSender"),
    ("", "list-request@lists.example.org", ANA, "AutomatedSender"),
    ("", "noreply@shop.example.net", ANA, "AutomatedSender"),
    ("Auto-Submitted: auto-replied\n", "bob@example.org", ANA, "AutoSubmitted"),
    ("Auto-Submitted: auto-generated; owner-email=x@y\n", "bob@example.org", ANA, "AutoSubmitted"),
    ("Auto-Submitted: no\n", "bob@example.org", ANA, "Reply"),
    ("List-Id: Team <team.example.org>\n", "bob@example.org", ANA, "MailingList"),
    ("List-Unsubscribe: <mailto:u@example.org>\n", "bob@example.org", ANA, "MailingList"),
    ("Precedence: bulk\n", "bob@example.org", ANA, "BulkPrecedence"),
    ("Precedence: junk\n", "bob@example.org", ANA, "BulkPrecedence"),
    ("Precedence: list\n", "bob@example.org", ANA, "BulkPrecedence"),
    ("X-Auto-Response-Suppress: OOF, DR\n", "bob@example.org", ANA, "AutoResponseSuppressed"),
    ("", "bob@example.org", "team@example.com", "NotAddressedToMe"),
    ("Cc: Ana <ANA@Example.COM>\n", "bob@example.org", "team@example.com", "Reply"),
    ("Bcc: ana+work@example.com\n", "bob@example.org", "team@example.com", "Reply"),
    ("", "bob@example.org", "ana.alias@example.com", "Reply"),
])
def test_who_gets_a_reply(extra, sender, to, reason):
    vac = vacation(incoming(extra, to=to), sender=sender, addresses=("ana.alias@example.com",))
    assert vac.reason == reason, vac.message
    assert (vac.reply is not None) == (reason == "Reply")


def test_addresses_argument_counts_as_mine():
    script = 'require "vacation";\nvacation :addresses ["ana@old.example.net"] "away";'
    assert vacation(incoming(to="ana@old.example.net"), script=script).reason == "Reply"
    assert vacation(incoming(to="ana@old.example.net")).reason == "NotAddressedToMe"


def test_once_per_sender_per_interval_with_an_injected_clock(tmp_path):
    state = FileState(tmp_path / "tracking.json")
    sent = []
    for day in (0, 1, 6, 7.01, 8, 15):
        now = NOW + day * DAY
        vac = vacation(incoming(), state=state, now=now)
        if vac.reply is not None:
            sent.append(day)
            state.record([vac.track], now)
    assert sent == [0, 7.01, 15]
    other = vacation(incoming(frm="carol@example.org"), sender="carol@example.org", state=state, now=NOW + 8 * DAY)
    assert other.reply is not None  # per sender
    again = FileState(tmp_path / "tracking.json")  # a restart reads the same file
    assert vacation(incoming(), state=again, now=NOW + 15.5 * DAY).reason == "AlreadyReplied"


def test_the_reply_is_a_proper_auto_reply():
    vac = vacation(incoming())
    out = vac.reply
    assert out.sender == "" and out.recipients == ("bob@example.org",)
    assert b"\n" not in out.data.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["To"] == "bob@example.org" and parsed["From"] == ANA
    assert parsed["Subject"] == "Auto: lunch?"
    assert parsed["In-Reply-To"] == "<m1@example.org>"
    assert parsed["References"].split() == ["<m0@example.org>", "<m1@example.org>"]
    assert parsed["Message-ID"].endswith("@localhost>") and parsed["Date"]
    assert parsed.get_content().strip() == "I am away until Monday."
    assert vac.track is not None and vac.track.expires == NOW + 7 * DAY


def test_subject_from_and_text_in_any_language():
    script = ('require "vacation";\nvacation :subject "Abwesend: Grüße" :from "Ana Núñez <ana@example.com>" '
              '"Estoy de vacaciones — vuelvo el lunes.";')
    parsed = email.message_from_bytes(vacation(incoming(), script=script).reply.data, policy=email.policy.default)
    assert parsed["Subject"] == "Abwesend: Grüße"
    assert parsed["From"].addresses[0].display_name == "Ana Núñez"
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content().strip() == "Estoy de vacaciones — vuelvo el lunes."
    raw = vacation(incoming(), script=script).reply.data
    assert raw.isascii()


def test_no_subject_gives_a_fixed_one_and_the_reply_comes_from_the_address_written_to():
    msg = mail("From: bob@example.org\nTo: Ana <ana.alias@example.com>\n\nhi\n")
    script = 'require "vacation";\nvacation :addresses ["ana.alias@example.com"] "away";'
    parsed = email.message_from_bytes(vacation(msg, script=script).reply.data, policy=email.policy.default)
    assert parsed["Subject"] == "Automated reply"
    assert parsed["From"] == "ana.alias@example.com"
    assert "In-Reply-To" not in parsed


def test_mime_reason_is_the_reply_entity():
    script = '''require "vacation";
vacation :mime text:
Content-Type: multipart/alternative; boundary=foo

--foo

I'm at the beach relaxing.  Mmmm, surf...

--foo
Content-Type: text/html; charset=us-ascii

<P>I'm at the <A HREF="beach.gif">beach</A> relaxing.
--foo--
.
;'''
    parsed = email.message_from_bytes(vacation(incoming(), script=script).reply.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Auto-Submitted"] == "auto-replied"
    parts = list(parsed.iter_parts())
    assert len(parts) == 2 and "beach" in parts[1].get_content()


def test_decide_is_pure_and_checks_lists_before_state():
    view = MessageView(incoming("List-Id: x <x.example>\n"))
    req = VacationRequest(reason="away", handle="h", seconds=DAY)
    env = Envelope("bob@example.org", ANA)
    assert decide(view, env, req, mailbox=ANA, already_replied=True).reason == "MailingList"
    assert decide(MessageView(incoming()), env, req, mailbox=ANA, already_replied=True).reason == "AlreadyReplied"


def test_an_invalid_from_from_variables_is_ignored():
    script = ('require ["vacation", "variables"];\nset "f" "not an address";\n'
              'vacation :from "${f}" "away";')
    parsed = email.message_from_bytes(vacation(incoming(), script=script).reply.data, policy=email.policy.default)
    assert parsed["From"] == ANA
