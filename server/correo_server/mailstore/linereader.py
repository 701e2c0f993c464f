"""Reading one command line of a line-based protocol (POP3, ManageSieve)
under a length cap, without ever holding more than the stream's limit.

An over-long line is read to its end and dropped, so the next line starts
clean and the connection stays usable after the protocol's error reply."""
from __future__ import annotations

import asyncio


class LineTooLong(Exception):
    pass


async def read_line(reader: asyncio.StreamReader, max_line: int) -> bytes | None:
    """One line, CRLF included; None at end of stream; :class:`LineTooLong`
    (after reading and dropping the line to its end) past ``max_line``
    octets plus the CRLF."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        await reader.readexactly(exc.consumed)
        while True:
            try:
                await reader.readuntil(b"\n")
                break
            except asyncio.LimitOverrunError as more:
                await reader.readexactly(more.consumed)
            except asyncio.IncompleteReadError:
                return None
        raise LineTooLong() from None
    if len(line) > max_line + 2:
        raise LineTooLong()
    return line
