"""The wire layer's pure parts: replies and their enhanced status codes, the
DATA section's transparency and end marker, paths as LMTP servers take them."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from correo_server.wire.data import data_lines, dot_stuff, find_end, longest_line, unstuff, wire_data
from correo_server.wire.paths import PathError, parse_path, path_text
from correo_server.wire.replies import (ProtocolError, Reply, parse_extensions, parse_reply_line, split_status,
                                        with_status)


class TestReplies:
    def test_reply_lines(self):
        assert parse_reply_line(b"250-PIPELINING\r\n") == (250, True, "PIPELINING")
        assert parse_reply_line(b"451 4.7.1 greylisted\r\n") == (451, False, "4.7.1 greylisted")
        assert parse_reply_line(b"220\r\n") == (220, False, "")
        for bad in (b"hello\r\n", b"25\r\n", b"250x\r\n", b"650 no\r\n"):
            with pytest.raises(ProtocolError):
                parse_reply_line(bad)

    def test_a_reply_read_again_is_read_the_same(self):
        """The client remembers short single-line replies it has parsed; what
        it hands on does not depend on whether a line was seen before."""
        import asyncio

        from correo_server.wire.client import _ReplyReader

        def read(*parts: bytes) -> list[tuple]:
            reader = _ReplyReader(asyncio.new_event_loop())
            for part in parts:
                reader.data_received(part)
            reader.loop.close()
            assert reader.error is None
            return [(r.code, r.status, r.text, r.lines) for r in reader.replies]

        data = (b"250 2.1.0 Ok\r\n250-2.1.0 Ok\r\n250 2.1.0 more\r\n354 go on\r\n"
                b"451 4.7.1 greylisted, try later\r\n250 2.1.0 Ok\r\n")
        first = read(data)
        assert first == read(data) == read(data[:30], data[30:])
        assert first[1] == (250, "2.1.0", "Ok more", ("2.1.0 Ok", "2.1.0 more"))
        assert first[3] == (451, "4.7.1", "greylisted, try later", ("4.7.1 greylisted, try later",))
        bad = _ReplyReader(asyncio.new_event_loop())
        bad.data_received(b"250 2.1.0 Ok\r\n250-x\r\n251 y\r\n")
        bad.loop.close()
        assert bad.error == "inconsistent multi-line reply" and len(bad.replies) == 1

    def test_one_status_parser_for_every_reply(self):
        assert Reply.parse(550, ["5.1.1 no such user"]) == Reply(550, "5.1.1", "no such user")
        assert Reply.parse(550, ["no such user"]).enhanced == "5.0.0"
        # a status of another class than the code is not one (RFC 3463)
        assert Reply.parse(451, ["5.1.1 inconsistent"]) == Reply(451, None, "5.1.1 inconsistent")
        assert Reply.parse(451, ["5.1.1 inconsistent"]).enhanced == "4.3.0"
        assert split_status("2.0.0") == ("2.0.0", "")
        assert split_status("2.0.0x") == (None, "2.0.0x")

    def test_what_the_server_said_is_what_is_shown(self):
        assert str(Reply.parse(451, ["greylisted"])) == "451 greylisted"
        assert str(Reply.parse(550, ["5.1.1 first", "5.1.1 second"])) == "550 5.1.1 first second"
        assert str(Reply.parse(250, [""])) == "250"

    def test_one_meaning_of_success(self):
        assert Reply(250, "2.0.0").ok and Reply(251, None).ok
        assert not Reply(354, None).ok and Reply(354, None).intermediate
        assert Reply(421, None).temporary and not Reply(421, None).permanent
        assert Reply(554, None).permanent and not Reply(554, None).temporary

    def test_ehlo_keywords(self):
        ext = parse_extensions(Reply.parse(250, ("mx.example", "SIZE 1000", "starttls", "AUTH PLAIN LOGIN")))
        assert ext == {"SIZE": "1000", "STARTTLS": "", "AUTH": "PLAIN LOGIN"}

    def test_outgoing_replies_get_a_status(self):
        assert with_status("500 Error: bad syntax") == "500 5.5.2 Error: bad syntax"
        assert with_status("250 2.1.0 Ok") == "250 2.1.0 Ok"
        assert with_status("354 End data") == "354 End data"
        assert with_status("250-a\r\n250 b") == "250-2.0.0 a\r\n250 2.0.0 b"


class TestData:
    def test_transparency_and_line_ends(self):
        assert wire_data(b".hidden\r\nline\r\n..two\r\n") == b"..hidden\r\nline\r\n...two\r\n.\r\n"
        assert wire_data(b"no final newline") == b"no final newline\r\n.\r\n"
        # bare LF and bare CR cannot end the data early (SMTP smuggling)
        assert wire_data(b"a\n.\nb\r.\rc\r\n") == b"a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n"
        assert b"".join(data_lines([b".a\r\n", b".b"])) == b"..a\r\n..b\r\n.\r\n"
        assert dot_stuff(b"plain") == b"plain"

    def test_only_crlf_dot_crlf_ends_the_data(self):
        assert find_end(b".\r\n") == 0
        assert find_end(b"a\r\n.\r\nMAIL") == 3
        for marker in (b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"):
            assert find_end(b"first" + marker + b"second") == -1
        assert find_end(b"xx.\r\n", 2) == 0  # the section starts at offset 2
        assert find_end(b"ab\r\n.\r\n", 0, 3) == 4  # resumes a few octets back

    @given(st.lists(st.sampled_from([b".", b"..", b"a", b"\r\n", b"x.y"]), max_size=30))
    def test_unstuffing_undoes_stuffing_and_the_end_is_found_at_the_end(self, parts):
        data = b"".join(parts) + b"\r\n"
        sent = dot_stuff(data)
        assert find_end(sent + b".\r\nNOOP\r\n") == len(sent)
        assert unstuff(sent) == data

    def test_longest_line(self):
        assert longest_line(b"abc\r\nde\r\n") == 3
        assert longest_line(b"abcdef") == 6


class TestPaths:
    @pytest.mark.parametrize("text", ["<a@b.example>", "<A.B+c@Example.COM> SIZE=10", "<\"a b\"@c.example>",
                                      "<@hop:x@y.example>", "<>", "bob@x.example"])
    def test_the_address_as_written_after_the_same_check(self, text):
        found, params = path_text(text, allow_null=True)
        box, full_params = parse_path(text, allow_null=True)
        assert params.strip() == full_params
        assert found.lower() == (box.address.lower() if box else "") or found.startswith('"')

    @pytest.mark.parametrize("text", ["<a@b", "<a@@b>", "<a b@c>", "<" + "a" * 65 + "@b.example>", "<a@b>x"])
    def test_bad_paths_are_refused_alike(self, text):
        with pytest.raises(PathError):
            path_text(text, allow_null=True)
        with pytest.raises(PathError):
            parse_path(text, allow_null=True)
