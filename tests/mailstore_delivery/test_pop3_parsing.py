"""POP3 command lines and multi-line replies, without a socket: what a client
sends is understood exactly, and what it reads back unstuffs to the message."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from correo_server.mailstore.pop3 import commands, multiline
from correo_server.mailstore.pop3.commands import Command, CommandError
from correo_server.mailstore.pop3.maildrop import Maildrop, NoSuchMessage, uidl


class TestCommandParsing:
    @pytest.mark.parametrize("line, expected", [
        (b"STAT\r\n", Command("STAT")),
        (b"stat\r\n", Command("STAT")),
        (b"LIST\r\n", Command("LIST")),
        (b"LIST 3\r\n", Command("LIST", ("3",))),
        (b"RETR 12\r\n", Command("RETR", ("12",))),
        (b"TOP 1 0\r\n", Command("TOP", ("1", "0"))),
        (b"UIDL\r\n", Command("UIDL")),
        (b"USER alice@example.com\r\n", Command("USER", ("alice@example.com",))),
        (b"PASS correct horse battery\r\n", Command("PASS", ("correct horse battery",))),
        (b"PASS\r\n", Command("PASS", ("",))),
        (b"AUTH plain\r\n", Command("AUTH", ("PLAIN",))),
        (b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", Command("AUTH", ("PLAIN", "AGFsaWNlAHNlY3JldA=="))),
        (b"STAT \r\n", Command("STAT")),  # a trailing space is tolerated
        (b"NOOP\n", Command("NOOP")),  # bare LF line ends too
    ])
    def test_valid_lines(self, line, expected):
        assert commands.parse(line) == expected

    @pytest.mark.parametrize("line, reason", [
        (b"\r\n", "empty"),
        (b"FROB\r\n", "unknown command"),
        (b"X\r\n", "unknown command"),
        (b"RETR\r\n", "needs 1 argument"),
        (b"RETR one\r\n", "must be a number"),
        (b"RETR 0\r\n", "1 or more"),
        (b"RETR -1\r\n", "must be a number"),
        (b"RETR 1 2\r\n", "too many"),
        (b"TOP 1\r\n", "needs 2 arguments"),
        (b"TOP 1 x\r\n", "must be a number"),
        (b"LIST  1\r\n", "single spaces"),
        (b"STAT 1\r\n", "too many"),
        (b"USER\r\n", "needs an argument"),
        (b"RETR 99999999999\r\n", "out of range"),
        (b"AUTH PL@IN\r\n", "mechanism"),
        (b"LIST \xff\r\n", "UTF-8"),
        (b"NOOP\x00\r\n", "control"),
    ])
    def test_invalid_lines(self, line, reason):
        with pytest.raises(CommandError, match=reason):
            commands.parse(line)

    def test_passwords_stay_out_of_repr(self):
        assert "secret" not in repr(commands.parse(b"PASS secret\r\n"))
        assert "c2VjcmV0" not in repr(commands.parse(b"AUTH PLAIN c2VjcmV0\r\n"))

    @given(st.binary(max_size=300))
    @settings(max_examples=400, deadline=None)
    def test_any_bytes_parse_or_fail_cleanly(self, line):
        try:
            cmd = commands.parse(line)
        except CommandError as exc:
            assert str(exc)
        else:
            assert cmd.name in commands.ARITY


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
                 max_size=12)


class TestDotStuffing:
    def test_lines_starting_with_a_dot_are_doubled(self):
        assert multiline.stuff(b".\r\n..x\r\nok\r\n") == b"..\r\n...x\r\nok\r\n.\r\n"

    def test_missing_final_line_end_is_added(self):
        assert multiline.stuff(b"abc") == b"abc\r\n.\r\n"
        assert multiline.stuff(b"") == b".\r\n"

    def test_bare_lf_goes_out_as_crlf_and_bare_cr_stays(self):
        assert multiline.stuff(b"a\nb\rc\r\n") == b"a\r\nb\rc\r\n.\r\n"

    @given(lines, st.integers(min_value=1, max_value=7))
    @settings(max_examples=300, deadline=None)
    def test_round_trip_in_any_chunking(self, parts, chunk):
        message = b"".join(p + b"\r\n" for p in parts)
        stuffer = multiline.DotStuffer()
        body = b"".join(stuffer.feed(message[i:i + chunk]) for i in range(0, len(message), chunk))
        body += stuffer.finish()
        assert body == multiline.stuff(message)
        assert body.endswith(b"\r\n.\r\n") or body == b".\r\n"
        # no line of the body but the last is a lone dot
        assert b"\r\n.\r\n" not in body[:-3]
        assert multiline.unstuff(body) == message
        assert multiline.wire_size(message) == len(message)

    def test_wire_size_counts_bare_lf_as_two(self):
        assert multiline.wire_size(b"a\nb\r\n") == 6


class TestTop:
    MESSAGE = b"From: a@b\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"

    def test_header_and_n_lines(self):
        assert multiline.top(self.MESSAGE, 0) == b"From: a@b\r\nSubject: s\r\n\r\n"
        assert multiline.top(self.MESSAGE, 2) == b"From: a@b\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\n"
        assert multiline.top(self.MESSAGE, 99) == self.MESSAGE

    def test_message_without_body(self):
        assert multiline.top(b"From: a@b\r\n", 5) == b"From: a@b\r\n"


class TestMaildrop:
    def drop(self):
        return Maildrop(1700000000, [(7, 100), (3, 10), (9, 1)])

    def test_numbers_follow_uid_order(self):
        drop = self.drop()
        assert [m.uid for m in drop.messages] == [3, 7, 9]
        assert drop.stat() == (3, 111)
        assert drop.scan_listing() == ["1 10", "2 100", "3 1"]

    def test_unique_ids_are_dovecot_style_uid_then_uidvalidity(self):
        assert uidl(1700000000, 3) == "000000036553F100"
        assert self.drop().uid_listing(1) == ["1 000000036553F100"]

    def test_delete_hides_and_reset_restores(self):
        drop = self.drop()
        drop.delete(2)
        assert drop.stat() == (2, 11)
        assert drop.scan_listing() == ["1 10", "3 1"]
        with pytest.raises(NoSuchMessage, match="deleted"):
            drop.get(2)
        with pytest.raises(NoSuchMessage):
            drop.delete(2)
        assert drop.deleted_uids() == [7]
        drop.reset()
        assert drop.stat() == (3, 111)
        assert drop.deleted_uids() == []

    def test_out_of_range(self):
        with pytest.raises(NoSuchMessage, match="only 3"):
            self.drop().get(4)
