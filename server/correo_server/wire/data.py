"""The DATA section on the wire (RFC 5321 section 4.5.2), both ways.

Sending: a message goes out with every line that starts with a dot given a
second one, a CRLF at its end and the ``.<CRLF>`` end marker
(:func:`wire_data` for any bytes, :func:`data_lines` for pieces that are
known to be CRLF-clean, as the relay's are); in a ``BDAT`` chunk, as
:func:`crlf_message` makes it (no dots, no end marker).  Receiving: only
``<CRLF>.<CRLF>`` ends the data (a bare LF or CR before or after the dot
does not: SMTP smuggling), and the transparency dots are removed
(:func:`find_end`, :func:`unstuff`).

Nothing here does I/O.
"""
from __future__ import annotations

END = b"\r\n.\r\n"


def dot_stuff(data: bytes) -> bytes:
    """Transparency for a piece of a message that starts at the beginning of
    a line (copies only when there is a dot to stuff)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def data_lines(pieces: list[bytes]) -> list[bytes]:
    """What goes on the wire after ``354`` for a message in pieces, each
    starting at a line start and using CRLF only: the stuffed pieces, a CRLF
    if the message does not end with one, and the end marker."""
    out = [dot_stuff(p) for p in pieces if p]
    if out and not out[-1].endswith(b"\r\n"):
        out.append(b"\r\n")
    out.append(b".\r\n")
    return out


def crlf_message(data: bytes) -> bytes:
    """Any message as a server receives it after :func:`wire_data`: CRLF
    line ends everywhere (a bare CR or LF becomes CRLF) and a CRLF at the
    end; what goes in a ``BDAT`` chunk (RFC 3030), which has no dots."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def chunk_pieces(pieces: list[bytes]) -> list[bytes]:
    """A message in pieces known to be CRLF-clean (as :func:`data_lines`
    takes them) as a ``BDAT`` chunk: the same octets the server keeps from
    :func:`data_lines` (no dots; a CRLF at the end)."""
    out = [p for p in pieces if p]
    if out and not out[-1].endswith(b"\r\n"):
        out.append(b"\r\n")
    return out


def wire_data(data: bytes) -> bytes:
    """What goes on the wire after ``354`` for any message: CRLF line ends
    everywhere (a bare CR or LF becomes CRLF, so that nothing can be
    smuggled past the end of data), leading dots doubled, the end marker."""
    return dot_stuff(crlf_message(data)) + b".\r\n"


def find_end(buf: bytes | bytearray, begin: int = 0, scanned: int = 0) -> int:
    """Where the end marker is in the DATA section that starts at ``begin``
    in ``buf`` (a line start): the offset from ``begin`` of the ``.`` line's
    dot, or -1.  ``scanned``: how many octets from ``begin`` on are known to
    hold no marker (the search resumes a few octets before that)."""
    if scanned == 0 and buf[begin:begin + 3] == b".\r\n":
        return 0
    i = buf.find(END, begin + max(scanned - 4, 0))
    return -1 if i < 0 else i + 2 - begin


def unstuff(data: bytes) -> bytes:
    """A received message without its end marker → the message (RFC 5321
    section 4.5.2: the first dot of a line that starts with one goes)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")


def longest_line(data: bytes) -> int:
    """Octets of the longest line of ``data``, its CRLF not counted."""
    if b"\r\n" not in data:
        return len(data)
    return max(map(len, data.split(b"\r\n")))
