"""POP3 multi-line responses: line endings, dot-stuffing, the terminating dot,
and the part of a message that ``TOP`` sends.

Pure functions over bytes, no I/O.  :mod:`.server` streams a stored message
through a :class:`DotStuffer` chunk by chunk, so that a large message is never
held twice in memory.

RFC 1939 section 3: each line of a multi-line response ends with CRLF; a line
that begins with the termination octet ``.`` gets one more ``.`` in front; the
response ends with ``.`` CRLF.  Messages are stored with CRLF line endings
(as LMTP and IMAP APPEND deliver them) and pass through unchanged; a bare LF,
should one be stored, goes out as CRLF, since POP3 has no other line ending.
A bare CR inside a line is data and is left alone.
"""
from __future__ import annotations

TERMINATOR = b".\r\n"


class DotStuffer:
    """Turns the bytes of a message, fed in any chunking, into the body of a
    multi-line response.  ``feed()`` returns what can be sent now; ``finish()``
    returns the end (a CRLF if the message did not end with one, then ``.``CRLF).
    """

    def __init__(self) -> None:
        self._at_line_start = True
        self._last = b"\n"  # the last byte seen (CR matters across chunk edges)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        start, n = 0, len(data)
        while start < n:
            if self._at_line_start and data[start] == 0x2E:  # "."
                out += b"."
            nl = data.find(b"\n", start)
            if nl < 0:
                out += data[start:]
                self._last = data[-1:]
                self._at_line_start = False
                break
            seg = data[start:nl]
            cr_before = seg.endswith(b"\r") if seg else self._last == b"\r"
            out += seg
            out += b"\n" if cr_before else b"\r\n"
            self._last = b"\n"
            self._at_line_start = True
            start = nl + 1
        return bytes(out)

    def finish(self) -> bytes:
        if self._at_line_start:
            return TERMINATOR
        return (b"\n" if self._last == b"\r" else b"\r\n") + TERMINATOR


def stuff(data: bytes) -> bytes:
    """The whole multi-line body for ``data`` (message bytes) in one go."""
    stuffer = DotStuffer()
    return stuffer.feed(data) + stuffer.finish()


def unstuff(body: bytes) -> bytes:
    """The inverse, as a client reads it: lines until ``.``CRLF, one leading
    dot removed where doubled.  Used by tests and by nothing on the server."""
    out = bytearray()
    for line in body.split(b"\r\n"):
        if line == b".":
            break
        out += (line[1:] if line.startswith(b".") else line) + b"\r\n"
    return bytes(out)


def wire_size(data: bytes) -> int:
    """Octets of the message as sent (before dot-stuffing): bare LFs become CRLF.
    RFC 1939 asks LIST and STAT for the exact size as it would be sent."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def header_end(data: bytes) -> int:
    """Offset just past the empty line that ends the header (the whole length
    when there is none)."""
    if data.startswith(b"\r\n"):
        return 2
    if data.startswith(b"\n"):
        return 1
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends) if ends else len(data)


def top(data: bytes, lines: int) -> bytes:
    """The header, the blank line that ends it, and the first ``lines`` lines of
    the body (RFC 1939 ``TOP msg n``).  A message without a body is all header."""
    pos = header_end(data)
    for _ in range(max(lines, 0)):
        if pos >= len(data):
            break
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data
        pos = nl + 1
    return data[:pos]
