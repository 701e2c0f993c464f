"""The DATA reader and the Received header, without sockets: what ends a
message, what is refused, and what is kept byte for byte."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correo_server.relay.data import MessageReader, Problem
from correo_server.relay.received import TLSInfo, protocol_name, received_header


def read(data: bytes, *, max_bytes: int = 10_000, max_line: int = 998, piece: int | None = None) -> MessageReader:
    """Feed ``data`` as the wire would deliver it: split at CRLF, with lines
    longer than ``piece`` arriving in pieces."""
    reader = MessageReader(max_bytes, max_line)
    rest = data
    while rest:
        end = rest.find(b"\r\n")
        line, rest = (rest, b"") if end < 0 else (rest[: end + 2], rest[end + 2:])
        if piece and len(line) > piece and line.endswith(b"\r\n"):
            body = line[:-2]
            for i in range(0, len(body), piece):
                if reader.feed(body[i:i + piece], False):
                    return reader
            if reader.feed(b"\r\n", True):
                return reader
            continue
        if reader.feed(line, line.endswith(b"\r\n")):
            return reader
    return reader


class TestEndOfData:
    def test_plain_message(self):
        r = read(b"Subject: x\r\n\r\nhello\r\n.\r\n")
        assert r.done and r.problem is None and r.content() == b"Subject: x\r\n\r\nhello\r\n"

    def test_dot_unstuffing(self):
        r = read(b"a\r\n..b\r\n.\r\n")
        assert r.content() == b"a\r\n.b\r\n"

    @pytest.mark.parametrize("marker", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\n", b"\r\n.\n", b"\r\n.\r"])
    def test_smuggled_end_markers_do_not_end_the_message(self, marker):
        data = b"Subject: x\r\n\r\nfirst" + marker + b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\nDATA\r\nsmuggled\r\n"
        r = read(data)
        assert not r.done  # still waiting for CRLF.CRLF
        r = read(data + b".\r\n")
        assert r.done and r.problem is Problem.BARE_NEWLINE

    @pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n\r\n"])
    def test_bare_cr_or_lf_refused(self, body):
        r = read(body + b".\r\n")
        assert r.problem is Problem.BARE_NEWLINE
        assert (r.refusal().code, r.refusal().status) == (554, "5.6.0")

    def test_nul_refused(self):
        r = read(b"a\x00b\r\n.\r\n")
        assert r.problem is Problem.NUL and r.refusal().code == 554

    def test_long_line_refused_in_pieces(self):
        r = read(b"x" * 5000 + b"\r\nok\r\n.\r\n", piece=1001)
        assert r.done and r.problem is Problem.LINE_TOO_LONG
        assert r.refusal().code == 554 and "998" in r.refusal().text

    def test_line_of_exactly_998_octets_kept(self):
        r = read(b"x" * 998 + b"\r\n.\r\n")
        assert r.problem is None and len(r.content()) == 1000

    def test_dot_line_inside_long_line_is_not_the_end(self):
        r = MessageReader(10_000, 998)
        assert not r.feed(b"x" * 1001, False)
        assert not r.feed(b".\r\n", True)  # continuation of the long line
        assert r.feed(b".\r\n", True)

    def test_size_limit_counts_and_stops_keeping(self):
        r = read(b"y" * 90 + b"\r\n" + b"z" * 20 + b"\r\n.\r\n", max_bytes=100)
        assert r.done and r.problem is Problem.TOO_BIG
        assert (r.refusal().code, r.refusal().status) == (552, "5.3.4")
        assert r._parts == []

    def test_first_problem_wins(self):
        r = read(b"a\nb\r\nc\x00\r\n.\r\n")
        assert r.problem is Problem.BARE_NEWLINE


def read_in_stretches(data: bytes, cuts: list[int], *, max_bytes: int, max_line: int) -> MessageReader:
    """Feed ``data`` (ending with the end-of-data line) as the relay reads it:
    in stretches cut anywhere (a CR at a cut held back until the next)."""
    reader = MessageReader(max_bytes, max_line)
    body = data[:-3]
    points = sorted({c for c in cuts if 0 < c < len(body)})
    held = b""
    for i, j in zip([0, *points], [*points, len(body)]):
        stretch, held = held + body[i:j], b""
        if j < len(body) and stretch.endswith(b"\r"):
            stretch, held = stretch[:-1], b"\r"
        reader.feed_bytes(stretch)
    reader.feed_bytes(held)
    reader.finish()
    return reader


_LINES = st.lists(st.one_of(st.text(alphabet="ab .", max_size=10),
                            st.sampled_from([".", "..x", "a\rb", "a\nb", "\r", "n\x00l", "x" * 25, "y" * 40])
                            ).map(lambda t: t.encode()), max_size=25)


class TestStretches:
    """The relay reads a message in a few large stretches (MessageReader.feed_bytes);
    the outcome is the one line-by-line reading gives."""

    @settings(max_examples=300, deadline=None)
    @given(lines=_LINES, cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=5),
           max_bytes=st.sampled_from([0, 60, 200, 10_000]))
    def test_same_outcome_as_line_by_line(self, lines, cuts, max_bytes):
        data = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines) + b".\r\n"
        want = read(data, max_bytes=max_bytes, max_line=30)
        got = read_in_stretches(data, cuts, max_bytes=max_bytes, max_line=30)
        assert want.done and got.done
        assert (got.problem is None) == (want.problem is None)
        if want.problem is None:
            assert got.content() == want.content()
        assert got.received == want.received
        whole_lines = read_in_stretches(data, [i + 1 for i in range(len(data)) if data[i - 1:i + 1] == b"\r\n"],
                                        max_bytes=max_bytes, max_line=30)
        assert whole_lines.problem is want.problem  # cut at line ends only: the same problem named
        assert (whole_lines.size, whole_lines.received) == (want.size, want.received)

    def test_a_crlf_cut_in_two_is_not_a_bare_cr(self):
        data = b"Subject: x\r\n\r\nbody\r\n.\r\n"
        for cut in range(1, len(data) - 3):
            r = read_in_stretches(data, [cut], max_bytes=1000, max_line=998)
            assert r.problem is None and r.content() == data[:-3], cut


class TestReceived:
    WHEN = datetime(2024, 3, 5, 10, 0, 0, tzinfo=timezone.utc)

    def test_shape(self):
        header = received_header(helo="client.example", peer_ip="192.0.2.7", hostname="mx.example.com",
                                 protocol="ESMTPSA", queue_id="ABC123", recipients=["bob@example.com"],
                                 tls=TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256), when=self.WHEN)
        assert header == (b"Received: from client.example (unknown [192.0.2.7])\r\n"
                          b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
                          b"\tby mx.example.com (correo) with ESMTPSA id ABC123\r\n"
                          b"\tfor <bob@example.com>; Tue, 05 Mar 2024 10:00:00 +0000\r\n")

    def test_several_recipients_are_not_listed(self):
        header = received_header(helo="c.example", peer_ip="::1", hostname="mx", protocol="ESMTP", queue_id="I",
                                 recipients=["a@x.example", "b@x.example"], tls=None, when=self.WHEN)
        assert b"for" not in header and b"[IPv6:::1]" in header
        assert header.endswith(b"id I;\r\n\tTue, 05 Mar 2024 10:00:00 +0000\r\n")

    def test_hostile_helo_is_neutralised(self):
        header = received_header(helo="evil) (by x\\", peer_ip="192.0.2.1", hostname="mx", protocol="SMTP",
                                 queue_id="I", recipients=[], tls=None, when=self.WHEN)
        assert header.startswith(b"Received: from [192.0.2.1] (unknown [192.0.2.1] helo=evil?")
        assert header.count(b"(") == header.count(b")")

    @pytest.mark.parametrize("kw, name", [
        (dict(esmtp=False, tls=False, authenticated=False, smtputf8=False), "SMTP"),
        (dict(esmtp=True, tls=True, authenticated=True, smtputf8=False), "ESMTPSA"),
        (dict(esmtp=True, tls=False, authenticated=True, smtputf8=False), "ESMTPA"),
        (dict(esmtp=True, tls=True, authenticated=False, smtputf8=True), "UTF8SMTPS"),
    ])
    def test_protocol_names(self, kw, name):
        assert protocol_name(**kw) == name
