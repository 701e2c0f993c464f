"""SMTP and LMTP replies as values, and RFC 3463 enhanced status codes.

One :class:`Reply` for every part of correo that speaks SMTP: the relay's
answers to its clients, what the queue and the mailstore answer over LMTP,
and what the queue's and the relay's clients read from a server.  A reply
is a code, an enhanced status (``None`` when a server sent none; then
:attr:`Reply.enhanced` derives one from the code) and a text.  Success has
one meaning: :attr:`Reply.ok` is a 2xx reply.

:func:`with_status` gives an outgoing reply line the enhanced code it
lacks (servers that advertise ENHANCEDSTATUSCODES, RFC 2034, owe one on
every reply but the greeting and the intermediate ``334``/``354``).
:func:`parse_reply_line` and :meth:`Reply.parse` read what a server sent.

Nothing here does I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|\Z)")
_HAS_STATUS = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |\Z)")
_CODE = re.compile(r"(\d{3})([ -])(.*)\Z", re.S)

# RFC 3463 codes for replies that arrive (or are written) without one.
DEFAULT_STATUS = {
    211: "2.0.0", 214: "2.0.0", 220: "2.0.0", 221: "2.0.0", 235: "2.7.0",
    250: "2.0.0", 251: "2.1.5", 252: "2.0.0",
    421: "4.3.0", 450: "4.2.0", 451: "4.3.0", 452: "4.3.1", 454: "4.7.0", 455: "4.5.4",
    500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
    521: "5.3.2", 530: "5.7.0", 534: "5.7.9", 535: "5.7.8", 538: "5.7.11",
    550: "5.0.0", 551: "5.1.6", 552: "5.3.4", 553: "5.1.3", 554: "5.0.0", 555: "5.5.4",
}

# Replies that never carry an enhanced code (RFC 2034 section 3, and practice:
# a 334 carries a base64 challenge, a 354 is an intermediate reply).
_NO_STATUS = {334, 354}

MAX_REPLY_LINES = 100


class ProtocolError(ValueError):
    """What a server sent is not an SMTP reply."""


def default_status(code: int) -> str:
    status = DEFAULT_STATUS.get(code)
    return status if status is not None else f"{code // 100}.0.0"


def split_status(text: str, code: int | None = None) -> tuple[str | None, str]:
    """``"4.3.1 disk full"`` → ``("4.3.1", "disk full")``; ``(None, text)``
    when the text starts with no enhanced code (or, given ``code``, with one
    of another class than the code's, which RFC 3463 does not allow)."""
    m = _STATUS.match(text)
    if m is None or (code is not None and m.group(1) != str(code)[0]):
        return None, text
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end():]


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply.  ``reason`` is a short label for metrics and logs
    (``relay_denied``, ``unknown_recipient``...), never sent; ``lines`` are a
    multi-line reply's lines as received (EHLO keywords), for readers."""

    code: int
    status: str | None
    text: str = ""
    reason: str | None = field(default=None, compare=False)
    lines: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        head = f"{self.code} {self.status}" if self.status else str(self.code)
        return f"{head} {self.text}" if self.text else head

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status: the one given, else the code's default."""
        return self.status or default_status(self.code)

    @property
    def ok(self) -> bool:
        """Positive completion (2xx): the one meaning of success."""
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        """3xx: go on (``354`` send the data, ``334`` an AUTH challenge)."""
        return 300 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def temporary(self) -> bool:
        """Neither success nor a permanent failure: try again later (a 4xx,
        and also anything a final reply should not be)."""
        return not self.ok and not self.permanent

    @classmethod
    def parse(cls, code: int, lines: list[str] | tuple[str, ...]) -> "Reply":
        """A reply read from a server (``lines`` without their ``250-``
        prefixes): the enhanced code from the first line that has one, the
        text of every line without it, joined by spaces."""
        status = None
        texts = []
        for line in lines:
            found, rest = split_status(line.strip(), code)
            if found is not None and status is None:
                status = found
            texts.append(rest)
        return cls(code, status, " ".join(t for t in texts if t), lines=tuple(lines))

    def wire(self) -> bytes:
        """The reply as sent: one line and its CRLF."""
        return str(self).encode("utf-8", "surrogateescape") + b"\r\n"


def local_reply(code: int, status: str, text: str, reason: str | None = None) -> Reply:
    """A reply correo makes up itself (a connection that failed, a timeout)."""
    return Reply(code, status, text, reason)


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """``b"250-PIPELINING\\r\\n"`` → ``(250, True, "PIPELINING")``: the code,
    whether more lines follow, the text.  Raises :class:`ProtocolError`."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if len(text) < 3 or not text[:3].isdigit() or text[0] not in "2345" or (len(text) > 3 and text[3] not in " -"):
        raise ProtocolError(f"malformed reply line {text[:80]!r}")
    return int(text[:3]), len(text) > 3 and text[3] == "-", text[4:]


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO/LHLO keywords (upper case) → their parameters, from the lines
    after the first (which names the server)."""
    ext: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            ext[keyword.upper()] = params.strip()
    return ext


def with_status(line: str) -> str:
    """Give an outgoing reply line an enhanced status code if it lacks one.

    Multi-line replies are handled line by line (``250-`` continuation lines
    get the same code).  Lines that are not replies are returned unchanged.
    """
    if "\r\n" in line:
        return "\r\n".join(with_status(part) for part in line.split("\r\n"))
    if _HAS_STATUS.match(line):
        return line
    m = _CODE.match(line)
    if not m:
        return line
    code = int(m.group(1))
    if code in _NO_STATUS:
        return line
    text = m.group(3)
    status = default_status(code)
    return f"{m.group(1)}{m.group(2)}{status} {text}" if text else f"{m.group(1)}{m.group(2)}{status}"
