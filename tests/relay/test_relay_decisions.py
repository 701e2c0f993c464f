"""The relay's decisions without sockets: address parsing, who may send to
whom, rate limiting with an injected clock, and the reply folded from the
queue's per-recipient answers."""
from __future__ import annotations

import pytest

from correo_server.config import Domain, ServerConfig
from correo_server.directory import Directory, MailboxEntry
from correo_server.relay.handoff import HandoffError, Outcome, client_reply, data_lines, dot_stuff
from correo_server.wire.paths import Mailbox, PathError, parse_params, parse_path, split_keyword
from correo_server.relay.policy import (Listener, RateLimiter, check_mail_params, check_recipient, check_sender,
                                        hosted_domain, resolve_postmaster)
from correo_server.wire.replies import Reply, with_status

CONFIG = ServerConfig(name="t", hostname="mx.example.com",
                      domains=(Domain("example.com", aliases=("example.net",)), Domain("xn--bcher-kva.example")))
ALICE = MailboxEntry("alice@example.com", aliases=("postmaster@example.com",))
DIRECTORY = Directory((ALICE, MailboxEntry("bob@example.com"), MailboxEntry("hans@xn--bcher-kva.example"),
                       MailboxEntry("carol@example.com", aliases=("sales@example.com",), suspended=True)), CONFIG)


def rcpt(text: str) -> Mailbox:
    box, _ = parse_path(text, allow_null=False)
    return box


class TestPaths:
    def test_plain_and_params(self):
        box, params = parse_path("<Alice@Example.COM> SIZE=100 BODY=8BITMIME", allow_null=False)
        assert (box.local, box.domain, box.address) == ("Alice", "example.com", "Alice@example.com")
        assert parse_params(params) == {"SIZE": "100", "BODY": "8BITMIME"}

    def test_null_sender_only_where_allowed(self):
        assert parse_path("<>", allow_null=True) == (None, "")
        with pytest.raises(PathError):
            parse_path("<>", allow_null=False)

    def test_relay_forms_are_recognised(self):
        assert rcpt('<"user@foreign.example"@example.com>').local == "user@foreign.example"
        assert rcpt('<"user@foreign.example"@example.com>').quoted
        assert rcpt("<@example.com:user@foreign.example>").route == ("example.com",)
        assert rcpt("<@a.example,@b.example:user@foreign.example>").route == ("a.example", "b.example")
        assert rcpt("<user%foreign.example@example.com>").local == "user%foreign.example"
        assert rcpt("<foreign.example!user@example.com>").local == "foreign.example!user"

    def test_quoted_local_part_is_requoted(self):
        assert rcpt('<"john smith"@example.com>').address == '"john smith"@example.com'
        assert rcpt('<"a\\"b"@example.com>').address == '"a\\"b"@example.com'
        assert rcpt('<"alice"@example.com>').address == "alice@example.com"

    def test_utf8_addresses(self):
        box = rcpt("<δοκιμή@παράδειγμα.example>")
        assert box.address == "δοκιμή@παράδειγμα.example" and not box.is_ascii

    def test_trailing_dot_and_literal(self):
        assert rcpt("<bob@example.com.>").domain == "example.com"
        assert rcpt("<bob@[192.0.2.1]>").literal

    @pytest.mark.parametrize("bad", ["<a@b@c>", "<a b@example.com>", "<@example.com>", "<user@>",
                                     "<user@-bad-.example>", "<user@[300.1.1.1]>", "<.user@example.com>",
                                     "<user@example.com", '<"unterminated@example.com>', "<a\x01b@example.com>",
                                     "<" + "a" * 65 + "@example.com>", "<user@exa_mple.com>"])
    def test_malformed_addresses_refused(self, bad):
        with pytest.raises(PathError) as info:
            parse_path(bad, allow_null=False)
        assert info.value.reply.code in (501, 553)

    def test_keyword(self):
        assert split_keyword("from: <a@b.example>", "FROM:") == "<a@b.example>"
        assert split_keyword("TO:<a@b.example>", "FROM:") is None

    @pytest.mark.parametrize("bad", ["SIZE=", "=1", "SIZE=a=b", "BAD_KEY=1", "SIZE=1 SIZE=2"])
    def test_bad_params(self, bad):
        with pytest.raises(PathError):
            parse_params(bad)


class TestOpenRelayRules:
    """Unauthenticated sessions (port 25) reach hosted mailboxes and nothing else."""

    @pytest.mark.parametrize("form", [
        "<user@foreign.example>",
        "<user%foreign.example@example.com>",
        "<user%foreign.example@example.net>",
        "<@example.com:user@foreign.example>",
        "<@foreign.example:alice@example.com>",
        '<"user@foreign.example"@example.com>',
        "<foreign.example!user@example.com>",
        "<foreign.example!user>",
        "<user@[192.0.2.1]>",
        "<user@foreign.example.>",
    ])
    @pytest.mark.parametrize("listener", list(Listener))
    def test_relay_forms_refused_unauthenticated(self, form, listener):
        reply = check_recipient(listener, False, rcpt(form), CONFIG, DIRECTORY)
        assert reply is not None and (reply.code, reply.status) == (554, "5.7.1"), reply

    @pytest.mark.parametrize("form", ["<user%foreign.example@example.com>", "<@example.com:user@foreign.example>",
                                      '<"user@foreign.example"@example.com>', "<foreign.example!user@example.com>"])
    def test_relay_forms_refused_even_when_authenticated(self, form):
        reply = check_recipient(Listener.SUBMISSION, True, rcpt(form), CONFIG, DIRECTORY)
        assert (reply.code, reply.status) == (554, "5.7.1")

    def test_authenticated_may_send_anywhere(self):
        assert check_recipient(Listener.SUBMISSION, True, rcpt("<user@foreign.example>"), CONFIG, DIRECTORY) is None

    @pytest.mark.parametrize("address", ["<alice@example.com>", "<ALICE@example.net>", "<postmaster@example.com>",
                                         "<alice+news@example.com>", '<"alice"@example.com>'])
    def test_hosted_recipients_accepted(self, address):
        assert check_recipient(Listener.SMTP, False, rcpt(address), CONFIG, DIRECTORY) is None

    def test_unknown_local_recipient(self):
        reply = check_recipient(Listener.SMTP, False, rcpt("<nobody@example.net>"), CONFIG, DIRECTORY)
        assert (reply.code, reply.status) == (550, "5.1.1")

    @pytest.mark.parametrize("listener, authenticated", [(Listener.SMTP, False), (Listener.SUBMISSION, True),
                                                         (Listener.SMTPS, True)])
    @pytest.mark.parametrize("address", ["<carol@example.com>", "<Carol@example.net>", "<sales@example.com>",
                                         "<carol+x@example.com>"])
    def test_suspended_mailbox_refused_on_every_port(self, listener, authenticated, address):
        reply = check_recipient(listener, authenticated, rcpt(address), CONFIG, DIRECTORY)
        assert (reply.code, reply.status) == (550, "5.2.1")
        assert reply.text == f"{address}: mailbox is disabled"

    def test_bare_postmaster_means_first_domain(self):
        box = resolve_postmaster(rcpt("<Postmaster>"), CONFIG)
        assert box.address == "postmaster@example.com"
        assert check_recipient(Listener.SMTP, False, box, CONFIG, DIRECTORY) is None

    def test_internationalised_domain_recipient_and_sender(self):
        for form in ("<hans@bücher.example>", "<hans@xn--bcher-kva.example>", "<HANS@BÜCHER.example>"):
            assert check_recipient(Listener.SMTP, False, rcpt(form), CONFIG, DIRECTORY) is None, form
            hans = DIRECTORY.lookup("hans@xn--bcher-kva.example")
            assert check_sender(Listener.SUBMISSION, hans, rcpt(form), DIRECTORY) is None, form

    def test_internationalised_domain_either_form(self):
        assert hosted_domain(CONFIG, "bücher.example").name == "xn--bcher-kva.example"
        assert hosted_domain(CONFIG, "EXAMPLE.NET").name == "example.com"
        assert hosted_domain(CONFIG, "[192.0.2.1]") is None


class TestSenders:
    def test_port_25_takes_any_sender(self):
        assert check_sender(Listener.SMTP, None, rcpt("<x@foreign.example>"), DIRECTORY) is None

    def test_submission_needs_login(self):
        assert check_sender(Listener.SUBMISSION, None, rcpt("<alice@example.com>"), DIRECTORY).code == 530

    @pytest.mark.parametrize("address", ["<alice@example.com>", "<postmaster@example.com>", "<Alice@example.net>"])
    def test_own_addresses(self, address):
        assert check_sender(Listener.SMTPS, ALICE, rcpt(address), DIRECTORY) is None

    @pytest.mark.parametrize("address", ["<bob@example.com>", "<alice@foreign.example>", "<ceo@example.com>",
                                         "<alice+x@example.com>"])
    def test_spoofing_refused(self, address):
        reply = check_sender(Listener.SUBMISSION, ALICE, rcpt(address), DIRECTORY)
        assert (reply.code, reply.status) == (553, "5.7.1")

    @pytest.mark.parametrize("listener", [Listener.SUBMISSION, Listener.SMTPS])
    def test_null_sender_refused_on_submission(self, listener):
        # <> is no mailbox's address: the message would belong to no domain.
        reply = check_sender(listener, ALICE, None, DIRECTORY)
        assert (reply.code, reply.status) == (553, "5.7.1")

    def test_null_sender_allowed_on_port_25(self):
        assert check_sender(Listener.SMTP, None, None, DIRECTORY) is None  # bounces arrive this way


class TestMailParameters:
    def test_size_over_limit(self):
        reply = check_mail_params({"SIZE": "2000"}, extended=True, max_bytes=1000)
        assert (reply.code, reply.status) == (552, "5.3.4")

    def test_accepted(self):
        options = check_mail_params({"SIZE": "10", "BODY": "8bitmime", "SMTPUTF8": None, "AUTH": "<>"},
                                    extended=True, max_bytes=1000)
        assert (options.size, options.body, options.smtputf8) == (10, "8BITMIME", True)

    @pytest.mark.parametrize("params, code", [({"SIZE": "x"}, 501), ({"BODY": "BINARYMIME"}, 501),
                                              ({"SMTPUTF8": "yes"}, 501), ({"RET": "FULL"}, 555)])
    def test_refused(self, params, code):
        assert check_mail_params(params, extended=True, max_bytes=1000).code == code

    def test_params_need_ehlo(self):
        assert check_mail_params({"SIZE": "1"}, extended=False, max_bytes=10).code == 501


class TestRateLimiter:
    def test_window_slides_with_the_clock(self):
        now = [1000.0]
        limiter = RateLimiter(3, 60, clock=lambda: now[0])
        for _ in range(3):
            assert limiter.allowed("192.0.2.1")
            limiter.record("192.0.2.1")
        assert not limiter.allowed("192.0.2.1")
        assert limiter.allowed("192.0.2.2")  # per client
        reply = limiter.rate_limited_reply("192.0.2.1")
        assert (reply.code, reply.status) == (450, "4.7.1") and "61 seconds" in reply.text
        now[0] += 59
        assert not limiter.allowed("192.0.2.1")
        now[0] += 1.5
        assert limiter.allowed("192.0.2.1")

    def test_disabled_when_zero(self):
        limiter = RateLimiter(0, 60, clock=lambda: 0.0)
        limiter.record("a")
        assert limiter.allowed("a")

    def test_memory_is_bounded(self):
        limiter = RateLimiter(5, 60, clock=lambda: 0.0, max_keys=100)
        for i in range(1000):
            limiter.record(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter._events) <= 100


class TestReplies:
    @pytest.mark.parametrize("line, expected", [
        ("250 OK", "250 2.0.0 OK"),
        ('500 Error: command "FOO" not recognized', '500 5.5.2 Error: command "FOO" not recognized'),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("554 5.7.1 Relay access denied", "554 5.7.1 Relay access denied"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("334 ", "334 "),
        ("250-a\r\n250 b", "250-2.0.0 a\r\n250 2.0.0 b"),
    ])
    def test_every_reply_gets_an_enhanced_code(self, line, expected):
        assert with_status(line) == expected

    def test_parse(self):
        assert Reply.parse(452, ["4.3.1 Insufficient system storage"]) == Reply(452, "4.3.1",
                                                                                "Insufficient system storage")
        assert Reply.parse(250, ["OK"]).enhanced == "2.0.0"


class TestHandoffReply:
    def outcome(self, *codes):
        replies = [Reply(c, f"{c // 100}.0.0", "x queued as Q1" if c == 250 else "no") for c in codes]
        return Outcome([f"r{i}@example.com" for i in range(len(codes))], replies, "data")

    def test_all_queued(self):
        reply = client_reply(self.outcome(250, 250), "RELAYID")
        assert reply.code == 250 and "Q1" in reply.text

    def test_any_temporary_means_retry(self):
        assert client_reply(self.outcome(250, 452), "R").code == 451
        assert client_reply(self.outcome(452, 452), "R").code == 452

    def test_all_permanent_passes_through(self):
        assert client_reply(self.outcome(552, 550), "R").code == 552

    def test_partial_is_temporary(self):
        reply = client_reply(self.outcome(250, 550), "R")
        assert (reply.code, reply.status) == (451, "4.3.0")

    def test_unreachable(self):
        reply = client_reply(HandoffError("unreachable", "refused"), "R")
        assert (reply.code, reply.status) == (451, "4.3.0")

    def test_dot_stuffing(self):
        assert dot_stuff(b".a\r\n..b\r\nc") == b"..a\r\n...b\r\nc"
        assert data_lines([b"H: 1\r\n", b".a\r\n..b\r\nc"]) == [b"H: 1\r\n", b"..a\r\n...b\r\nc", b"\r\n",
                                                                 b".\r\n"]
