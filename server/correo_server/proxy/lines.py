"""Reading a client's commands before login: whole lines under a small cap
(4 KB, like the mailstore's pre-login limit), and IMAP literals (``{n}``
answered with a continuation, ``{n+}`` not) for LOGIN's arguments."""
from __future__ import annotations

import asyncio
import re

MAX_LINE = 4096


class TooLong(Exception):
    pass


async def read_line(reader: asyncio.StreamReader) -> bytes:
    """One line with its CRLF; b"" at end of stream; :class:`TooLong` over the cap."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return b""  # the client went away (a partial line is no command)
    except asyncio.LimitOverrunError:
        raise TooLong() from None
    if len(line) > MAX_LINE:
        raise TooLong()
    return line


_LITERAL = re.compile(rb"\{(\d{1,4})(\+?)\}\r?\n$")


async def read_imap_command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """An IMAP command line with its literals inlined (as quoted strings), or b""."""
    out = b""
    while True:
        line = await read_line(reader)
        if not line:
            return b""
        m = _LITERAL.search(line)
        if m is None:
            return out + line
        size = int(m.group(1))
        if len(out) + len(line) + size > MAX_LINE:
            raise TooLong()
        if not m.group(2):
            writer.write(b"+ Ready for literal data\r\n")
            await writer.drain()
        data = await reader.readexactly(size)
        out += line[:m.start()] + quote(data)


def quote(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_TOKEN = re.compile(rb'"((?:[^"\\\r\n]|\\.)*)"|([^\s()"]+)')


def tokens(text: bytes) -> list[bytes]:
    """Atoms and quoted strings of an IMAP command line (after the tag)."""
    out = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            out.append(re.sub(rb"\\(.)", rb"\1", m.group(1)))
        else:
            out.append(m.group(2))
    return out
