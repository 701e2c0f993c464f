"""The lean LMTP server of the internal hops, driven over a real socket: the
replies a client sees, in the order it sent its commands, however its bytes
arrive; one reply per recipient after DATA; the end of data only at
<CRLF>.<CRLF>; limits; and its own client (wire.client) against it."""
from __future__ import annotations

import asyncio

import pytest

from correo_server.wire.client import Connection
from correo_server.wire.data import wire_data
from correo_server.wire.replies import Reply
from correo_server.wire.server import Listener, Transaction


class Recorder:
    """A handler that keeps what it is given; ``hold`` makes DATA wait."""

    def __init__(self) -> None:
        self.messages: list[tuple[Transaction, bytes]] = []
        self.hold: asyncio.Event | None = None
        self.fail = False

    def mail(self, txn: Transaction) -> Reply | None:
        return Reply(452, "4.3.1", "full") if txn.sender == "full@example.com" else None

    def rcpt(self, txn: Transaction, address: str, params: dict) -> Reply | None:
        if address.startswith("nobody@"):
            return Reply(550, "5.1.1", f"<{address}>: no such mailbox")
        txn.notes.append(address.upper())
        return None

    async def data(self, txn: Transaction, content: bytes) -> list[Reply]:
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("boom")
        self.messages.append((txn, content))
        return [Reply(250, "2.0.0", f"<{r}> stored") for r in txn.rcpts]


@pytest.fixture
async def lmtp():
    handler = Recorder()
    listener = Listener(handler, hostname="lmtp.test", max_bytes=10_000, max_line=1001, max_recipients=3,
                        timeout=5)
    server = await listener.start("127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    listener.recorder = handler
    yield listener
    await listener.close(1.0)


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> "Raw":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        assert (await raw.reply())[0] == 220
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> tuple[int, list[str]]:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            assert line.endswith("\r\n"), line
            lines.append(line[4:-2])
            if line[3] == " ":
                return int(line[:3]), lines

    async def replies(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            code, lines = await self.reply()
            out.append(f"{code} {lines[-1]}")
        return out

    def close(self) -> None:
        self.writer.close()


async def test_pipelined_commands_are_answered_in_order_with_one_reply_per_recipient(lmtp):
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\nXFORWARD IDENT=R1\r\nMAIL FROM:<a@example.org> SIZE=20\r\n"
                   b"RCPT TO:<b@example.com>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    code, lhlo = await raw.reply()
    assert code == 250 and {"PIPELINING", "ENHANCEDSTATUSCODES", "SIZE 10000", "XFORWARD IDENT"} <= set(lhlo)
    assert await raw.replies(6) == ["250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok",
                                    "550 5.1.1 <nobody@example.com>: no such mailbox", "250 2.1.5 Ok",
                                    "354 End data with <CR><LF>.<CR><LF>"]
    await raw.send(b"Subject: x\r\n\r\n..dot\r\n.\r\n")
    assert await raw.replies(2) == ["250 2.0.0 <b@example.com> stored", "250 2.0.0 <c@example.com> stored"]
    ((txn, content),) = lmtp.recorder.messages
    assert content == b"Subject: x\r\n\r\n.dot\r\n"
    assert (txn.sender, txn.rcpts, txn.notes, txn.ident) == ("a@example.org", ["b@example.com", "c@example.com"],
                                                            ["B@EXAMPLE.COM", "C@EXAMPLE.COM"], "R1")
    raw.close()


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
async def test_the_end_of_data_is_found_however_the_bytes_arrive(lmtp, cut):
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    await raw.replies(4)
    message = b"a\r\n.\r\nNOOP\r\n"
    for i in range(0, len(message), cut):
        await raw.send(message[i:i + cut])
        await asyncio.sleep(0.005)
    assert await raw.replies(2) == ["250 2.0.0 <b@example.com> stored", "250 2.0.0 Ok"]
    assert lmtp.recorder.messages[0][1] == b"a\r\n"
    raw.close()


@pytest.mark.parametrize("marker", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r"])
async def test_bare_newlines_do_not_end_the_data(lmtp, marker):
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    await raw.replies(4)
    await raw.send(b"first" + marker + b"MAIL FROM:<x@y.example>\r\n.\r\n")
    assert await raw.replies(1) == ["250 2.0.0 <b@example.com> stored"]
    # a dot after a CRLF is a transparency dot, whatever follows it
    sent = b"first" + marker + b"MAIL FROM:<x@y.example>\r\n"
    assert lmtp.recorder.messages[0][1] == sent.replace(b"\r\n.", b"\r\n")
    raw.close()


async def test_limits_and_protocol_order(lmtp):
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"MAIL FROM:<a@example.org>\r\nHELO c\r\nLHLO c\r\nRCPT TO:<b@example.com>\r\n"
                   b"MAIL FROM:<a@example.org> SIZE=99999\r\nMAIL FROM:<full@example.com>\r\n"
                   b"MAIL FROM:<a@b\r\nDATA\r\n")
    assert [r[:9] for r in await raw.replies(2)] == ["503 5.5.1", "500 5.5.1"]
    await raw.reply()  # LHLO
    assert [r[:9] for r in await raw.replies(5)] == ["503 5.5.1", "552 5.3.4", "452 4.3.1", "501 5.1.3",
                                                      "503 5.5.1"]
    await raw.send(b"MAIL FROM:<a@example.org>\r\n" + b"".join(b"RCPT TO:<r%d@example.com>\r\n" % i
                                                                for i in range(4)))
    assert [r[:9] for r in await raw.replies(5)] == ["250 2.1.0"] + ["250 2.1.5"] * 3 + ["452 4.5.3"]
    await raw.send(b"DATA\r\n" + b"x" * 1000 + b"\r\n.\r\n")  # a line of 1002 octets
    assert [r[:9] for r in await raw.replies(4)] == ["354 End d"] + ["500 5.5.2"] * 3
    await raw.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    await raw.replies(3)
    await raw.send((b"y" * 900 + b"\r\n") * 12 + b".\r\nNOOP\r\n")  # over the size limit
    assert [r[:9] for r in await raw.replies(2)] == ["552 5.3.4", "250 2.0.0"]
    assert not lmtp.recorder.messages
    await raw.send(b"NOOP " + b"z" * 3000 + b"\r\nNOOP\r\n")
    assert [r[:9] for r in await raw.replies(2)] == ["500 5.5.2", "250 2.0.0"]
    raw.close()


async def test_a_failing_handler_still_owes_one_reply_per_recipient(lmtp):
    lmtp.recorder.fail = True
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    await raw.replies(5)
    await raw.send(b"x\r\n.\r\nNOOP\r\n")
    assert [r[:9] for r in await raw.replies(3)] == ["451 4.3.0", "451 4.3.0", "250 2.0.0"]
    raw.close()


async def test_commands_sent_while_a_message_is_stored_wait_their_turn(lmtp):
    lmtp.recorder.hold = asyncio.Event()
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    await raw.replies(4)
    await raw.send(b"x\r\n.\r\nRSET\r\nQUIT\r\n")
    await asyncio.sleep(0.05)
    assert lmtp.in_flight == 1
    closing = asyncio.create_task(lmtp.close(5.0))  # shutdown waits for the message being stored
    await asyncio.sleep(0.05)
    lmtp.recorder.hold.set()
    assert await raw.replies(3) == ["250 2.0.0 <b@example.com> stored", "250 2.0.0 Ok", "221 2.0.0 Bye"]
    await closing
    assert await raw.reader.read() == b""


async def test_the_wire_client_against_the_wire_server(lmtp):
    conn = await Connection.open("lmtp.test", "127.0.0.1", lmtp.port, connect_timeout=5, timeout=5)
    assert (await conn.hello("client.test", lmtp=True)).ok
    for i in range(3):  # one connection, several messages
        outcome = await conn.transaction("a@example.org", ["b@example.com", "nobody@example.com"],
                                         wire_data(b".hidden\r\nbody %d" % i), size=20, ident=f"Q{i}")
        assert [r.code for r in outcome.replies] == [250, 550] and outcome.stage == "data"
    outcome = await conn.transaction("a@example.org", ["b@example.com", "nobody@example.com"], wire_data(b"x"),
                                     size=1, all_or_nothing=True)
    assert outcome.stage == "rcpt" and not conn.payload_sent
    await conn.quit()
    assert [(t.ident, c) for t, c in lmtp.recorder.messages] == [(f"Q{i}", b".hidden\r\nbody %d\r\n" % i)
                                                                  for i in range(3)]


async def test_idle_connections_are_told_and_closed():
    listener = Listener(Recorder(), hostname="lmtp.test", max_bytes=100, timeout=0.3)
    server = await listener.start("127.0.0.1", 0)
    raw = await Raw.connect(server.sockets[0].getsockname()[1])
    assert (await raw.reply())[0] == 421
    assert await raw.reader.read() == b""
    await listener.close(1.0)


async def test_bdat_chunks_are_taken_as_they_are_in_one_round_trip(lmtp):
    """CHUNKING (RFC 3030): MAIL, RCPT, BDAT and the message in one write;
    the chunks' octets are the message (dots and CRLF.CRLF included), and
    each accepted recipient gets its reply after BDAT LAST."""
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\n")
    assert "CHUNKING" in (await raw.reply())[1]
    first, last = b"Subject: x\r\n\r\n.dot\r\n.\r\n", b"MAIL FROM:<x@y.example>\r\nend\r\n"
    await raw.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<nobody@example.com>\r\n"
                   b"BDAT %d\r\n%sBDAT %d LAST\r\n%sNOOP\r\n" % (len(first), first, len(last), last))
    assert await raw.replies(6) == ["250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <nobody@example.com>: no such mailbox",
                                    f"250 2.0.0 {len(first)} octets received", "250 2.0.0 <b@example.com> stored",
                                    "250 2.0.0 Ok"]
    ((txn, content),) = lmtp.recorder.messages
    assert content == first + last and txn.rcpts == ["b@example.com"]
    # one octet at a time, and an empty last chunk
    await raw.send(b"MAIL FROM:<>\r\nRCPT TO:<c@example.com>\r\nBDAT 5\r\n")
    for octet in b"a\r\n.\r":
        await raw.send(bytes([octet]))
        await asyncio.sleep(0.002)
    await raw.send(b"BDAT 0 LAST\r\n")
    assert await raw.replies(4) == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 5 octets received",
                                    "250 2.0.0 <c@example.com> stored"]
    assert lmtp.recorder.messages[1][1] == b"a\r\n.\r"
    raw.close()


async def test_bdat_out_of_order_is_refused_after_its_octets(lmtp):
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\n")
    await raw.reply()
    # No MAIL: the chunk is read and dropped (its octets are not commands).
    await raw.send(b"BDAT 6 LAST\r\nNOOP\r\nNOOP\r\n")
    assert await raw.replies(2) == ["503 5.5.1 Error: need MAIL command", "250 2.0.0 Ok"]
    # No recipient accepted: refused, and the transaction is over.
    await raw.send(b"MAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nBDAT 3 LAST\r\nabcMAIL FROM:<>\r\n")
    assert await raw.replies(4) == ["250 2.1.0 Ok", "550 5.1.1 <nobody@example.com>: no such mailbox",
                                    "503 5.5.1 Error: need RCPT command", "250 2.1.0 Ok"]
    # DATA after BDAT in one transaction; RSET ends it.
    await raw.send(b"RCPT TO:<b@example.com>\r\nBDAT 3\r\nabcDATA\r\nRSET\r\n")
    assert await raw.replies(4) == ["250 2.1.5 Ok", "250 2.0.0 3 octets received",
                                    "503 5.5.1 Error: DATA after BDAT in one transaction", "250 2.0.0 Ok"]
    # Over the size limit: read, and refused per recipient.
    big = b"x" * 10_001
    await raw.send(b"MAIL FROM:<>\r\nRCPT TO:<b@example.com>\r\nBDAT %d LAST\r\n%s" % (len(big), big))
    assert (await raw.replies(3))[2].startswith("552 5.3.4")
    assert lmtp.recorder.messages == []
    # A size that is not a number: the input cannot be followed, the connection ends.
    await raw.send(b"BDAT lots\r\n")
    assert (await raw.replies(1))[0].startswith("501 5.5.4")
    assert await raw.reader.read() == b""


async def test_the_wire_client_sends_the_message_with_bdat_when_given_it(lmtp):
    from correo_server.wire.data import crlf_message

    conn = await Connection.open("lmtp.test", "127.0.0.1", lmtp.port, connect_timeout=5, timeout=5)
    assert (await conn.hello("client.test", lmtp=True)).ok and "CHUNKING" in conn.extensions
    data = b".hidden\r\nbare\nline\r\n.\r\nend"
    outcome = await conn.transaction("a@example.org", ["b@example.com", "nobody@example.com"], wire_data(data),
                                     size=40, ident="Q1", content=crlf_message(data))
    assert [r.code for r in outcome.replies] == [250, 550] and outcome.stage == "data" and conn.payload_sent
    refused = await conn.transaction("a@example.org", ["nobody@example.com"], wire_data(data), size=40,
                                     content=crlf_message(data))
    assert [r.code for r in refused.replies] == [550] and refused.stage == "rcpt"
    again = await conn.transaction("a@example.org", ["c@example.com"], wire_data(data), size=40)  # DATA
    assert again.replies[0].code == 250
    await conn.quit()
    # The same octets arrive either way: what DATA would have delivered.
    assert [c for _, c in lmtp.recorder.messages] == [crlf_message(data)] * 2
    assert crlf_message(data) == b".hidden\r\nbare\r\nline\r\n.\r\nend\r\n"


async def test_an_atomic_transaction_keeps_nothing_when_a_recipient_is_refused(lmtp):
    """``MAIL FROM:<...> XATOMIC``: one refused recipient and the message is
    refused for the accepted ones too, after BDAT LAST or DATA alike."""
    raw = await Raw.connect(lmtp.port)
    await raw.send(b"LHLO c\r\n")
    assert "XATOMIC" in (await raw.reply())[1]
    await raw.send(b"MAIL FROM:<a@example.org> XATOMIC\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<nobody@example.com>\r\n"
                   b"RCPT TO:<c@example.com>\r\nBDAT 3 LAST\r\nabcMAIL FROM:<a@example.org> XATOMIC\r\n"
                   b"RCPT TO:<nobody@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    replies = await raw.replies(10)
    assert replies[4:6] == ["554 5.5.0 Not every recipient was accepted (XATOMIC): nothing kept"] * 2
    assert replies[6:] == ["250 2.1.0 Ok", "550 5.1.1 <nobody@example.com>: no such mailbox", "250 2.1.5 Ok",
                           "354 End data with <CR><LF>.<CR><LF>"]
    await raw.send(b"x\r\n.\r\nMAIL FROM:<a@example.org> XATOMIC\r\nRCPT TO:<b@example.com>\r\nBDAT 3 LAST\r\nxyz")
    assert await raw.replies(4) == ["554 5.5.0 Not every recipient was accepted (XATOMIC): nothing kept",
                                    "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 <b@example.com> stored"]
    assert [c for _, c in lmtp.recorder.messages] == [b"xyz"]
    raw.close()


async def test_the_wire_client_keeps_all_or_nothing_with_bdat(lmtp):
    from correo_server.wire.data import chunk_pieces, data_lines

    conn = await Connection.open("lmtp.test", "127.0.0.1", lmtp.port, connect_timeout=5, timeout=5)
    await conn.hello("client.test", lmtp=True)
    pieces = [b"Subject: x\r\n\r\n", b".dot\r\nend"]
    refused = await conn.transaction("a@example.org", ["b@example.com", "nobody@example.com"], data_lines(pieces),
                                     size=30, all_or_nothing=True, ident="Q1", content=chunk_pieces(pieces))
    assert refused.stage == "rcpt" and [r.code for r in refused.replies] == [250, 550]
    kept = await conn.transaction("a@example.org", ["b@example.com", "c@example.com"], data_lines(pieces),
                                  size=30, all_or_nothing=True, content=chunk_pieces(pieces))
    assert kept.stage == "data" and [r.code for r in kept.replies] == [250, 250]
    plain = await conn.transaction("a@example.org", ["c@example.com"], data_lines(pieces), size=30)  # DATA
    assert plain.stage == "data"
    await conn.quit()
    # what BDAT delivered is what DATA delivered
    assert [c for _, c in lmtp.recorder.messages] == [b"Subject: x\r\n\r\n.dot\r\nend\r\n"] * 2
