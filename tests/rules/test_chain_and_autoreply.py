"""The order of the scripts (admin, user, auto-reply) and the auto-reply as a
script: pure, no I/O."""
from __future__ import annotations

import datetime as dt

import pytest

from correo_server import autoreply
from correo_server.directory import AutoReply
from correo_server.mailstore.rules.chain import ADMIN, USER, Step, reaches_owner, run_chain
from correo_server.sieve import Context, Envelope, FileInto, Keep, Redirect, Vacation, compile_script
from correo_server.sieve.tracking import MemoryState

NOW = dt.datetime(2027, 1, 15, 9, 0, tzinfo=dt.timezone.utc).timestamp()
MSG = (b"From: carol@elsewhere.org\r\nTo: ana@example.com\r\nSubject: hello\r\n"
       b"Message-ID: <1@elsewhere.org>\r\n\r\nhi\r\n")
ENV = Envelope("carol@elsewhere.org", "ana@example.com")


def ctx(**kw) -> Context:
    return Context("ana@example.com", now=NOW, state=MemoryState(), **kw)


def step(role: str, text: str) -> Step:
    return Step(role, role, compile_script(text, role))


AUTO = compile_script(autoreply.script(AutoReply(body="Away.")), autoreply.NAME)


class TestSequence:
    def test_no_script_is_the_implicit_keep(self):
        assert run_chain([], None, MSG, ENV, ctx()).actions == (Keep(implicit=True),)

    def test_a_keep_hands_on_to_the_next_script(self):
        chain = run_chain([step(ADMIN, 'require "copy";\nredirect :copy "archive@example.com";\n'),
                           step(USER, 'require "fileinto";\nfileinto "Mine";\n')], None, MSG, ENV, ctx())
        assert chain.actions == (Redirect("archive@example.com", copy=True), FileInto("Mine"))
        assert [r.role for r in chain.runs] == [ADMIN, USER]

    def test_a_cancelled_keep_ends_the_sequence(self):
        chain = run_chain([step(ADMIN, 'require "fileinto";\nfileinto "Quarantine";\n'),
                           step(USER, 'discard;\n')], None, MSG, ENV, ctx())
        assert chain.actions == (FileInto("Quarantine"),) and len(chain.runs) == 1

    def test_the_later_script_decides_the_flags_of_the_keep(self):
        chain = run_chain([step(ADMIN, 'require "imap4flags";\nkeep :flags "\\\\Seen";\n'),
                           step(USER, 'require "imap4flags";\naddflag "$user";\n')], None, MSG, ENV, ctx())
        assert chain.actions == (Keep(flags=("$user",), implicit=True),)

    def test_a_failing_script_keeps_and_the_next_one_still_runs(self):
        chain = run_chain([step(ADMIN, 'require "include";\ninclude "missing";\n'),
                           step(USER, 'require "fileinto";\nfileinto "Mine";\n')], None, MSG, ENV, ctx())
        assert chain.actions == (FileInto("Mine"),)
        ((run, error),) = chain.errors
        assert run.role == ADMIN and error.kind == "include"


class TestAutoReplyInTheChain:
    def test_it_runs_after_a_rule_filed_the_message(self):
        chain = run_chain([step(USER, 'require "fileinto";\nfileinto "Work";\n')], AUTO, MSG, ENV, ctx())
        assert [type(a) for a in chain.actions] == [FileInto, Vacation]
        assert chain.of(Vacation)[0].reply is not None

    @pytest.mark.parametrize("script", ['require "fileinto";\nfileinto "Junk";\n', 'discard;\n',
                                        'require "reject";\nreject "no";\n', 'redirect "x@elsewhere.org";\n'])
    def test_it_does_not_answer_mail_its_owner_will_not_read(self, script):
        chain = run_chain([step(ADMIN, script)], AUTO, MSG, ENV, ctx())
        assert not chain.of(Vacation) and [r.role for r in chain.runs] == [ADMIN]

    def test_one_vacation_per_message(self):
        chain = run_chain([step(USER, 'require "vacation";\nvacation "mine";\n')], AUTO, MSG, ENV, ctx())
        (vacation,) = chain.of(Vacation)
        assert vacation.text == "mine" and [r.role for r in chain.runs] == [USER]

    def test_reaches_owner(self):
        assert reaches_owner([Keep()]) and reaches_owner([FileInto("Lists/rust")])
        assert not reaches_owner([FileInto("Junk")]) and not reaches_owner([FileInto("INBOX/Trash")])


class TestAutoReplyScript:
    def test_every_text_compiles_quoted(self):
        auto = AutoReply(body='He said "no" \\ then left.\n${var} stays literal', subject='"Away"')
        script = compile_script(autoreply.script(auto), autoreply.NAME)
        chain = run_chain([], script, MSG, ENV, ctx())
        reply = chain.of(Vacation)[0].reply.data
        assert b'He said "no" \\ then left.' in reply and b"${var} stays literal" in reply
        assert b'Subject: "Away"' in reply

    def test_html_goes_beside_the_text_as_seven_bit_mime(self):
        auto = AutoReply(body="Fermé jusqu'à lundi.", html_body="<p>Fermé</p>")
        text = autoreply.script(auto)
        assert ":mime" in text and "multipart/alternative" in text
        reply = run_chain([], compile_script(text, "a"), MSG, ENV, ctx()).of(Vacation)[0].reply.data
        assert reply.isascii() and b"Ferm=C3=A9" in reply and b"text/html" in reply

    def test_the_interval_and_the_extra_addresses(self):
        auto = AutoReply(body="Away.", interval_days=3, extra_addresses=("ana@old.example",))
        script = compile_script(autoreply.script(auto), "a")
        env = Envelope("carol@elsewhere.org", "ana@example.com")
        msg = MSG.replace(b"To: ana@example.com", b"To: ana@old.example")
        (vacation,) = run_chain([], script, msg, env, ctx()).of(Vacation)
        assert vacation.reply is not None and vacation.period == 3 * 86400

    def test_editing_the_text_starts_a_new_reply(self):
        a, b = AutoReply(body="one"), AutoReply(body="two")
        assert autoreply.handle(a) != autoreply.handle(b)
        assert autoreply.handle(a) == autoreply.handle(AutoReply(body="one", interval_days=9))

    @pytest.mark.parametrize("start,end,now,on,reason", [
        (None, None, "2027-01-15T09:00:00Z", True, "Replying"),
        ("2027-02-01T00:00:00+01:00", None, "2027-01-31T23:30:00Z", True, "Replying"),
        ("2027-02-01T00:00:00Z", None, "2027-01-31T23:30:00Z", False, "NotStarted"),
        (None, "2027-01-15T09:00:00Z", "2027-01-15T09:00:00Z", False, "Ended"),
        ("2027-02-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-01-15T09:00:00Z", False, "EmptyWindow"),
    ])
    def test_the_window_in_status_matches_the_script(self, start, end, now, on, reason):
        auto = AutoReply(body="Away.", start=start, end=end)
        when = autoreply.parse_time(now).timestamp()
        assert autoreply.window(auto, when)[:2] == (on, reason)
        chain = run_chain([], compile_script(autoreply.script(auto), "a"), MSG, ENV,
                          Context("ana@example.com", now=when, state=MemoryState()))
        assert bool(chain.of(Vacation)) == on
