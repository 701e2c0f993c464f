"""Reading a message after ``DATA``: the state machine, without I/O.

:mod:`.smtp` passes the message here as it arrives, in whatever pieces
(:class:`~.smtp.DataSink` keeps back only what could be the start of the
end marker, so that the reader never sees it).  The reader:

* ends the message only at ``CRLF . CRLF`` -- a line that is exactly
  ``.`` followed by CRLF.  ``LF . LF``, ``CR . CR``, ``LF . CRLF`` and the like
  do not end it (SMTP smuggling, CVE-2023-51764 and friends);
* **rejects** a message that contains a bare CR or a bare LF anywhere, like
  Postfix's ``smtpd_forbid_bare_newline``: rather than guess what a
  downstream server would make of them, the sender is told to fix its line
  endings (``554 5.6.0``).  Normalising would be the alternative, but it
  silently changes signed content and hides broken or hostile clients;
* rejects NUL bytes (RFC 5322 forbids them; many programs truncate at them);
* rejects lines longer than the limit (998 octets by default, RFC 5322
  section 2.1.1) and messages larger than the limit -- without keeping what
  it discards: after the first problem it only counts, so memory stays
  bounded whatever the client sends, and the reply waits until the end of
  the data, so the session stays in step (RFC 5321 section 4.2.5);
* removes the transparency dot (RFC 5321 section 4.5.2);
* keeps at most ``spool_over`` octets of the message in memory: past that,
  what it has and what follows go to an unnamed temporary file
  (``tempfile.TemporaryFile`` in ``spool_dir``: unlinked at once, so that
  the kernel frees it when the reader is closed or the process dies,
  whatever happens to the session).  A client holding a transfer open, or
  many of them, pins disk pages the kernel can drop, not the relay's heap;
  an aborted transfer frees its memory with the reader (:meth:`close`,
  which the session calls however the transfer ends).  The file is not
  fsynced: the relay acknowledges nothing before the queue has the message.

The first problem found is the one reported.

:meth:`MessageReader.feed` takes one line (or a piece of a long one);
:meth:`MessageReader.feed_bytes` takes any stretch of the message, and takes
whole lines that break no rule in one step (the common case: a message read
in a few large pieces instead of a line at a time).
"""
from __future__ import annotations

import enum
import tempfile

from ..wire.replies import Reply

SPOOL_OVER_BYTES = 256 * 1024  # octets kept in memory before a message goes to a temporary file


class Problem(enum.Enum):
    TOO_BIG = "size"
    LINE_TOO_LONG = "line_too_long"
    BARE_NEWLINE = "bare_newline"
    NUL = "nul"


class MessageReader:
    def __init__(self, max_bytes: int, max_line: int, *, spool_over: int = SPOOL_OVER_BYTES,
                 spool_dir: str | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_line = max_line
        self.spool_over = spool_over
        self.spool_dir = spool_dir or None  # None: tempfile's choice ($TMPDIR, /tmp)
        self._held = 0  # octets in _parts
        self._file = None  # the temporary file, once the message outgrew memory
        self.size = 0  # octets of content seen (after unstuffing, CRLFs counted)
        self.received = 0  # octets read from the wire
        self.problem: Problem | None = None
        self.done = False
        self._parts: list[bytes] = []
        self._midline = False
        self._line_len = 0

    def feed(self, chunk: bytes, complete: bool) -> bool:
        """Take the next piece; ``complete`` when it ends with CRLF.  Returns
        True once the end-of-data line has been seen."""
        self.received += len(chunk)
        if complete and not self._midline and chunk == b".\r\n":
            self.done = True
            return True
        body = chunk[:-2] if complete else chunk
        if not self._midline and body[:1] == b".":
            body = body[1:]
        self._line_len += len(body)
        self.size += len(body) + (2 if complete else 0)
        if self.problem is None:
            if self.max_bytes and self.size > self.max_bytes:
                self.problem = Problem.TOO_BIG
            elif self._line_len > self.max_line:
                self.problem = Problem.LINE_TOO_LONG
            elif b"\r" in body or b"\n" in body:
                self.problem = Problem.BARE_NEWLINE
            elif b"\x00" in body:
                self.problem = Problem.NUL
            if self.problem is not None:
                self._drop()
        if self.problem is None:
            self._keep(body + b"\r\n" if complete else body)
        self._midline = not complete
        if complete:
            self._line_len = 0
        return False

    def feed_bytes(self, data: bytes) -> None:
        """Take the next stretch of the message, of any length, short of the
        end-of-data line.  A CR that ends ``data`` must be held back by the
        caller until the octet after it has come (a CRLF is not split)."""
        if not data:
            return
        if (self.problem is None and not self._midline and data.endswith(b"\r\n") and b"\x00" not in data
                and data.count(b"\r") == data.count(b"\r\n") == data.count(b"\n")
                and len(max(data.split(b"\r\n"), key=len)) <= self.max_line):
            # Whole lines, no bare CR or LF, no NUL, none too long: one step.
            content = (data[1:] if data.startswith(b".") else data).replace(b"\r\n.", b"\r\n")
            if not self.max_bytes or self.size + len(content) <= self.max_bytes:
                self.received += len(data)
                self.size += len(content)
                self._keep(content)
                return
        start = 0  # anything else: line by line, by the rules of feed()
        while start < len(data):
            end = data.find(b"\r\n", start)
            if end < 0:
                self.feed(data[start:], False)
                return
            self.feed(data[start:end + 2], True)
            start = end + 2

    def finish(self) -> None:
        """The end-of-data line has been read."""
        self.received += 3
        self.done = True

    def _keep(self, piece: bytes) -> None:
        if self._file is not None:
            self._file.write(piece)
            return
        self._parts.append(piece)
        self._held += len(piece)
        if self._held > self.spool_over:
            self._file = tempfile.TemporaryFile(dir=self.spool_dir, prefix="correo-data-")
            self._file.writelines(self._parts)
            self._parts.clear()
            self._held = 0

    def _drop(self) -> None:
        self._parts.clear()
        self._held = 0
        self.close()

    @property
    def spooled(self) -> bool:
        """Whether the message went to a temporary file."""
        return self._file is not None

    def close(self) -> None:
        """Free what the message holds (memory, the temporary file); the
        session calls this however the transfer ends.  Idempotent."""
        self._parts.clear()
        self._held = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def content(self) -> bytes:
        """The message as received (CRLF line endings, dots unstuffed)."""
        if self.problem is not None:
            raise ValueError("the message was rejected")
        if self._file is not None:
            self._file.seek(0)
            data = self._file.read()
            self.close()
            self._parts, self._held = [data], len(data)
            return data
        if len(self._parts) != 1:
            self._parts = [b"".join(self._parts)]  # keep one copy, not two
        return self._parts[0] if self._parts else b""

    def refusal(self) -> Reply | None:
        """The reply for the problem found, or None."""
        if self.problem is Problem.TOO_BIG:
            return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size ({self.max_bytes} bytes)",
                         self.problem.value)
        if self.problem is Problem.LINE_TOO_LONG:
            return Reply(554, "5.6.0", f"Message has a line longer than {self.max_line} octets "
                         "(RFC 5322 section 2.1.1); not accepted", self.problem.value)
        if self.problem is Problem.BARE_NEWLINE:
            return Reply(554, "5.6.0", "Message contains bare CR or LF characters; "
                         "lines must end with CRLF (RFC 5321 section 2.3.8)", self.problem.value)
        if self.problem is Problem.NUL:
            return Reply(554, "5.6.0", "Message contains NUL characters; not accepted", self.problem.value)
        return None
