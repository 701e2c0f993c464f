"""The relay's connection I/O (relay.connection): a client that does not
read its replies stops being read, so the relay's memory stays bounded;
commands sent before the client closed its side are still answered."""
from __future__ import annotations

import asyncio
import socket

from relay_helpers import RawClient

from correo_server.relay.connection import HOLD_LIMIT


async def test_a_client_that_does_not_read_its_replies_stops_being_read(make_relay):
    relay = await make_relay(relay={"max_commands_per_session": 0})  # no command budget: only the I/O limits
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the replies pile up at the relay
    sock.connect(("127.0.0.1", relay.smtp))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawClient(reader, writer)
    assert (await client.reply())[0] == 220
    count = 400_000  # 2.4 MB of commands, 5.6 MB of replies
    sender = asyncio.ensure_future(client.send(b"NOOP\r\n" * count))
    (session,) = relay.service.context.sessions
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not session._read_paused and loop.time() < deadline:  # noqa: SLF001 - what is under test
        await asyncio.sleep(0.05)
    assert session._read_paused and session._write_paused  # noqa: SLF001
    held, queued = len(session._buf), session.transport.get_write_buffer_size()  # noqa: SLF001
    await asyncio.sleep(0.5)  # paused means paused: nothing more is read or written
    assert (len(session._buf), session.transport.get_write_buffer_size()) == (held, queued)  # noqa: SLF001
    assert held <= HOLD_LIMIT + 512 * 1024 and queued <= 4 * 1024 * 1024
    seen = 0
    while seen < count:  # now the client reads: every command is answered, in order
        line = await asyncio.wait_for(reader.readline(), 30)
        assert line == b"250 2.0.0 OK\r\n", (seen, line)
        seen += 1
    await asyncio.wait_for(sender, 30)
    assert (await client.cmd("QUIT"))[0] == 221
    await client.close()


async def test_commands_sent_before_the_client_closed_its_side_are_answered(make_relay):
    relay = await make_relay()
    client = await RawClient.connect(relay.smtp)
    await client.send(b"EHLO client.example\r\nMAIL FROM:<someone@foreign.example>\r\nRCPT TO:<alice@example.com>\r\n"
                      b"NOOP\r\n")
    client.writer.write_eof()
    replies = [(await client.reply())[0] for _ in range(4)]
    assert replies == [250, 250, 250, 250]
    assert await client.closed()
    await client.close()
    assert not relay.service.context.sessions  # the slot is given back at once


async def test_a_client_that_closes_mid_message_ends_the_transfer_at_once(make_relay):
    relay = await make_relay(relay={"timeout_seconds": 60})
    client = await RawClient.connect(relay.smtp)
    for command in ("EHLO client.example", "MAIL FROM:<someone@foreign.example>", "RCPT TO:<alice@example.com>"):
        assert (await client.cmd(command))[0] == 250
    assert (await client.cmd("DATA"))[0] == 354
    await client.send(b"Subject: half\r\n\r\nno end marker")
    client.writer.write_eof()
    assert await client.closed(timeout=5)  # not at the 60 s idle timeout
    await client.close()
    assert relay.sink.messages == []
    assert not relay.service.context.sessions


async def test_garbage_cut_anywhere_gets_well_formed_replies_and_the_relay_stays_up(make_relay):
    """Fixed-seed random sessions: valid commands, garbage, NULs, bare CR/LF,
    over-long lines, AUTH exchanges and messages, cut at random points.
    Every reply line is a well-formed reply and the relay still serves the
    next client."""
    import random
    import re

    relay = await make_relay(relay={"max_commands_per_session": 0})
    rng = random.Random(12)
    pieces = [b"EHLO client.example\r\n", b"HELO x\r\n", b"MAIL FROM:<someone@foreign.example>\r\n",
              b"RCPT TO:<alice@example.com>\r\n", b"DATA\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n", b"RSET\r\n",
              b"NOOP\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN\r\n", b"*\r\n", b"STARTTLS\r\n", b"HELP MAIL\r\n",
              b"VRFY x\r\n", b"\r\n", b"\x00\xff\xfe\r\n", b"MAIL FROM:<a\x00b@x>\r\n", b"a\rb\nc\r\n",
              b"x" * 3000 + b"\r\n", b"RCPT TO:<" + b"y" * 1100 + b"@example.com>\r\n", b"DATA x\r\n", b".\r\n"]
    well_formed = re.compile(rb"^\d{3}[ -]")
    for i in range(40):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))) + b"QUIT\r\n"
        client = await RawClient.connect(relay.smtp if i % 2 else relay.submission)  # AUTH exchanges on 587
        at = 0
        try:
            while at < len(stream):
                step = rng.randint(1, 400)
                client.writer.write(stream[at:at + step])
                at += step
                if rng.random() < 0.3:
                    await asyncio.sleep(0)
            await client.writer.drain()
        except (ConnectionResetError, BrokenPipeError, RuntimeError):  # the relay said goodbye (uvloop: RuntimeError)
            pass
        got = b""
        while True:  # read until the relay closes (QUIT, or a message that never ended and a 421)
            try:
                chunk = await asyncio.wait_for(client.reader.read(65536), 3)
            except asyncio.TimeoutError:  # inside a message or an AUTH exchange the QUIT was data: fine
                break
            except ConnectionResetError:  # closed (too many bad commands) with our input unread: TCP resets
                break
            if not chunk:
                break
            got += chunk
        await client.close()
        lines = got.split(b"\r\n")
        assert lines[-1] == b"", got[-200:]
        assert all(well_formed.match(line) for line in lines[:-1]), got[-500:]
    client = await RawClient.connect(relay.smtp)
    assert (await client.cmd("NOOP"))[0] == 250
    await client.close()
