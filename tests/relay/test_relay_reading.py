"""The DATA reader and the Received header, without sockets: what ends a
message, what is refused, and what is kept byte for byte."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

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
