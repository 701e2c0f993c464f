"""Reading IMAP's syntax from one command's bytes (RFC 3501 section 9): the
:class:`Reader` cursor and its primitives (atoms, strings, literals,
mailbox names, sequence sets, dates, lists).  No I/O here.

:mod:`.server` collects one whole command — its lines and the literals they
announce, exactly as they came over the wire —; :mod:`.commands` parses it
with a :class:`Reader`, each command class reading its own arguments.  A
failure raises :class:`Fail` (turned into :class:`BadCommand`, answered
``BAD`` with the tag when one could be read).  :func:`literal_at_end` and
:func:`tag_of` are the two small decisions the server needs while
collecting.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from . import utf7

MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}

_ATOM_CHAR = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]\x80-\xff]+")
_ASTRING_CHAR = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\x80-\xff]+")
TAG = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\+\x80-\xff]+")
_LIST_CHAR = re.compile(rb"[^(){ \x00-\x1f\x7f\"\\\x80-\xff]+")
_NUMBER = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r\n")
_LITERAL_END = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r?\n\Z")
_FOUND = re.compile(rb"[^\x00-\x20()\[\]\x7f-\xff]{1,30}")  # a word shown in a message
MAX_NUMBER = 2 ** 63 - 1
MAX_NESTING = 100


class BadCommand(Exception):
    """A command that does not parse: answered ``tag BAD message``."""

    def __init__(self, tag: str | None, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.code = code


class LineTooLong(Exception):
    """A line over the connection's limit: read to its end without keeping
    it (``head``: its first octets, for the tag of the ``BAD``)."""

    def __init__(self, head: bytes, tag: str | None = None) -> None:
        super().__init__("line too long")
        self.head = head
        self.tag = tag if tag is not None else tag_of(head)


class Fail(Exception):
    def __init__(self, message: str, whole: bool = False) -> None:
        super().__init__(message)
        self.whole = whole  # the message names the command: no "Error in IMAP command X:" before it


def literal_at_end(line: bytes) -> tuple[int, bool] | None:
    """The literal a command line announces at its end: (octets,
    non-synchronizing?) for ``{12}\\r\\n`` / ``{12+}\\r\\n``, else None."""
    m = _LITERAL_END.search(line)
    if not m:
        return None
    return int(m.group(1)), bool(m.group(2))


def tag_of(line: bytes) -> str | None:
    """The tag at the start of a (possibly broken) command line, if any."""
    m = TAG.match(line)
    if not m or (len(line) > m.end() and line[m.end():m.end() + 1] not in (b" ", b"\r", b"\n")):
        return None
    return m.group(0).decode("ascii")


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SeqSet:
    """A sequence-set; ``None`` in a range stands for ``*``.  ``saved``: the
    set is ``$``, the result a SEARCH saved (SEARCHRES, RFC 5182), which
    only the selected view can resolve (:meth:`..states.SelectedView.resolve`)."""

    ranges: tuple[tuple[int | None, int | None], ...]
    saved: bool = False

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        """The ranges as (low, high), ``*`` being ``largest``."""
        return self._bounds(largest)

    def _bounds(self, largest: int) -> list[tuple[int, int]]:
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((min(a, b), max(a, b)))
        return out

    def uses_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.ranges)

    def seqs(self, count: int) -> list[int]:
        """Message sequence numbers, ascending; raises ValueError for a number
        beyond ``count`` (or any number when the folder is empty)."""
        result: set[int] = set()
        for a, b in self._bounds(count):
            if a < 1 or b > count:
                raise ValueError("invalid message sequence number")
            result.update(range(a, b + 1))
        return sorted(result)

    def select_uids(self, uids: list[int]) -> list[int]:
        """The UIDs of ``uids`` (sorted) this UID set names; ``*`` is the
        largest UID, so ``n:*`` always includes the last message."""
        if not uids:
            return []
        chosen: set[int] = set()
        for a, b in self._bounds(uids[-1]):
            i = bisect.bisect_left(uids, a)
            j = bisect.bisect_right(uids, b)
            chosen.update(uids[i:j])
        return sorted(chosen)

    def contains(self, n: int, largest: int) -> bool:
        return any(a <= n <= b for a, b in self._bounds(largest))


# ---------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------

class Reader:
    """A cursor over one command's bytes (literals inline, as on the wire).

    Failures say what is wrong in the user's terms (as Dovecot does): when
    the command ends where more was needed, the innermost open ``(`` or
    ``[`` is reported missing its closer, or else :attr:`usage` says what
    the command needs (``LIST needs a reference and a mailbox name``);
    anything else names what was found instead (``Unexpected ')'``)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.closers: list[str] = []  # the ")" / "]" still expected, innermost last
        self.usage = "Missing command name"
        self.invalid_mailbox: str | None = None
        self.saved_sets = False  # "$" is a sequence set (SEARCHRES)
        self.utf8_names = False  # mailbox names are UTF-8 (IMAP4rev2, UTF8=ACCEPT), converted to mUTF-7

    def fail(self, message: str) -> None:
        raise Fail(message)

    def fail_usage(self, message: str) -> None:
        """Fail with a message that stands on its own (it names the command)."""
        raise Fail(message, whole=True)

    def found(self) -> str:
        """What is at the cursor, for a message: ``'FOO'``, ``')'``,
        ``space``, ``octet 0x00``."""
        m = _FOUND.match(self.buf, self.pos)
        if m:
            return f"'{m.group(0).decode()}'"
        c = self.buf[self.pos:self.pos + 1]
        if c and 0x21 <= c[0] <= 0x7E:
            return f"'{c.decode()}'"
        return "space" if c == b" " else f"octet 0x{c[0]:02x}" if c else "end of line"

    def missing(self, missing: str | None = None) -> None:
        """The command ended where something was needed."""
        if missing:
            self.fail(missing)
        if self.closers:
            self.fail(f"Missing '{self.closers[-1]}'")
        self.fail_usage(self.usage)

    def expected(self, what: str, missing: str | None = None) -> None:
        """``what`` is not at the cursor: say it is missing, or what is there."""
        if self.at_end():
            self.missing(missing or (None if self.closers else f"Missing {what}"))
        self.fail(f"Expected {what}, found {self.found()}")

    def peek(self, n: int = 1) -> bytes:
        return self.buf[self.pos:self.pos + n]

    def take(self, token: bytes, *, ci: bool = True) -> bool:
        chunk = self.buf[self.pos:self.pos + len(token)]
        if (chunk.upper() == token.upper()) if ci else chunk == token:
            self.pos += len(token)
            return True
        return False

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.take(token):
            self.expected(what or f"'{token.decode()}'")

    def sp(self, missing: str | None = None) -> None:
        """The space before the next argument; ``missing`` is the message
        when the command ends here instead (else see :meth:`missing`)."""
        if self.take(b" "):
            return
        if self.at_end():
            self.missing(missing)
        if self.peek() == b")" and self.closers[-1:] != [")"]:
            self.fail("Unexpected ')'")
        self.fail(f"Unexpected {self.found()} (arguments are separated by one space)")

    def at_end(self) -> bool:
        rest = self.buf[self.pos:]
        return rest in (b"", b"\r\n", b"\n")

    def end(self) -> None:
        if self.at_end():
            return
        c = self.peek()
        if c == b")":
            self.fail("Unexpected ')'")
        if c == b" ":
            self.fail("Too many arguments")
        self.fail(f"Unexpected {self.found()}")

    def open(self, opener: bytes, closer: str, what: str) -> None:
        """Enter ``(`` or ``[`` (its closer becomes the one expected)."""
        self.expect(opener, what)
        self.closers.append(closer)
        if len(self.closers) > MAX_NESTING:
            self.fail("Too deeply nested")

    def close(self, closer: bytes) -> None:
        if not self.take(closer):
            self.expected(f"'{closer.decode()}'")
        self.closers.pop()

    def match(self, pattern: re.Pattern) -> bytes | None:
        m = pattern.match(self.buf, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def atom(self, what: str = "an atom") -> str:
        value = self.match(_ATOM_CHAR)
        if value is None:
            self.expected(what)
        return value.decode("ascii")

    def number(self, *, nonzero: bool = False, what: str = "a number") -> int:
        start = self.pos
        value = self.match(_NUMBER)
        if value is None:
            self.expected(what)
        if len(value) > 19 or int(value) > MAX_NUMBER or (nonzero and int(value) == 0):
            self.pos = start
            self.fail(f"Invalid {what.split(' ', 1)[-1]}: {value[:20].decode()}")
        return int(value)

    def quoted(self) -> bytes:
        if not self.take(b'"'):
            self.expected("a quoted string")
        out = bytearray()
        buf = self.buf
        while True:
            if self.pos >= len(buf):
                self.fail("Missing '\"'")
            c = buf[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                nxt = buf[self.pos + 1:self.pos + 2]
                if nxt not in (b'"', b"\\"):
                    self.fail("Invalid escape in a quoted string (only \\\" and \\\\ are allowed)")
                out += nxt
                self.pos += 2
                continue
            if c in (0x0D, 0x0A):  # the line ended inside the string
                self.fail("Missing '\"'")
            if c == 0x00:
                self.fail("NUL in a quoted string")
            out.append(c)
            self.pos += 1

    def literal(self) -> bytes:
        m = _LITERAL.match(self.buf, self.pos)
        if not m:
            self.expected("a literal")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(self.buf):
            self.fail("Literal shorter than announced")
        self.pos = start + n
        return self.buf[start:start + n]

    def string(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        self.expected(what)
        raise AssertionError

    def astring(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string(what)
        value = self.match(_ASTRING_CHAR)
        if value is None:
            self.expected(what)
        return value

    def nstring(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string("a string or NIL")

    def mailbox(self) -> str:
        """A mailbox name, which IMAP4rev1 carries in 7-bit modified UTF-7
        (RFC 3501 5.1.3).  A name that is not — 8-bit octets (raw UTF-8 from
        a client that assumes UTF8=ACCEPT, which correo does not offer), a
        broken ``&...-`` sequence — is syntactically a string, so the
        command parses, but the name is recorded in :attr:`invalid_mailbox`
        and the session refuses the command ``NO`` (as Dovecot does).  It is
        never converted: a client that sent ``Café`` and found ``Caf&AOk-``
        in LIST would see a different folder and create it again (mbsync)."""
        raw = self.astring("a mailbox name")
        if self.utf8_names:
            return self._utf8_name(raw, "Mailbox name")
        name = raw.decode("utf-8", "replace")
        if not raw.isascii() or not utf7.is_valid(name):
            if self.invalid_mailbox is None:
                self.invalid_mailbox = name
            return name
        if name.upper() == "INBOX":
            return "INBOX"
        return name

    def _utf8_name(self, raw: bytes, what: str, *, inbox: bool = True) -> str:
        """A name sent as UTF-8 (every character itself, ``&`` too) in the
        store's modified UTF-7."""
        try:
            name = utf7.encode(raw.decode("utf-8"))
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")
        return "INBOX" if inbox and name.upper() == "INBOX" else name

    def reference(self) -> str:
        """The reference of LIST/LSUB: like a pattern, not a mailbox name —
        an 8-bit UTF-8 reference is converted to modified UTF-7 and an
        invalid one simply matches nothing (as in Dovecot)."""
        raw = self.astring("a reference")
        if self.utf8_names:
            return self._utf8_name(raw, "Reference")
        try:
            name = utf7.from_wire(raw)
        except UnicodeDecodeError:
            self.fail("Invalid reference: neither modified UTF-7 nor UTF-8")
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (b'"', b"{"):
            raw = self.string("a mailbox pattern")
        else:
            raw = self.match(_LIST_CHAR)
            if raw is None:
                self.expected("a mailbox pattern")
        if self.utf8_names:
            return self._utf8_name(raw, "Mailbox pattern", inbox=False)
        try:
            return utf7.from_wire(raw)
        except UnicodeDecodeError:
            self.fail("Invalid mailbox pattern: neither modified UTF-7 nor UTF-8")
        raise AssertionError

    def paren_list(self, item: Callable[[], Any], *, allow_empty: bool = True,
                   what: str = "a list in parentheses") -> list:
        self.open(b"(", ")", what)
        items: list = []
        if self.take(b")"):
            if not allow_empty:
                self.fail(f"Empty list: expected {what.removeprefix('a list of ')}")
            self.closers.pop()
            return items
        while True:
            items.append(item())
            if self.take(b")"):
                self.closers.pop()
                return items
            if not self.take(b" "):
                if self.at_end():
                    self.missing()
                self.fail(f"Unexpected {self.found()} in a list (items are separated by one space)")

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom("a flag")
        return self.atom("a flag")

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag, what="a list of flags")

    def store_flags(self) -> list[str]:
        """A flag list, or flags separated by spaces without parentheses."""
        if self.peek() == b"(":
            return self.flag_list()
        flags = [self.flag()]
        while self.take(b" "):
            flags.append(self.flag())
        return flags

    def seq_number(self) -> int | None:
        if self.take(b"*"):
            return None
        return self.number(nonzero=True, what="a sequence number")

    def seq_set(self, what: str = "a message set") -> SeqSet:
        """A sequence-set; anything malformed is an ``Invalid message set``
        (or UID set), with the part that was read."""
        start = self.pos
        if self.saved_sets and self.take(b"$"):
            return SeqSet((), saved=True)
        ranges = []
        try:
            while True:
                a = self.seq_number()
                b = a
                if self.take(b":"):
                    b = self.seq_number()
                ranges.append((a, b))
                if not self.take(b","):
                    break
        except Fail:
            if self.pos == start and self.at_end():
                self.missing()
            self.pos = start
            text = re.match(rb"[^\x00-\x20()\x7f-\xff]{0,40}", self.buf[start:]).group(0).decode()
            self.fail(f"Invalid {what.removeprefix('a ')}: {text}" if text else f"Expected {what}, found {self.found()}")
        return SeqSet(tuple(ranges))

    def date(self) -> date:
        start = self.pos
        quoted = self.take(b'"')
        m = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})").match(self.buf, self.pos)
        if not m or m.group(2).decode().lower() not in MONTHS:
            self.pos = start
            if not self.at_end():
                self.fail(f"Invalid date {self.found()} (expected a date such as 1-Feb-2024)")
            self.expected("a date such as 1-Feb-2024")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "'\"' after the date")
        try:
            return date(int(m.group(3)), MONTHS[m.group(2).decode().lower()], int(m.group(1)))
        except ValueError:
            self.fail(f"Invalid date: {m.group(0).decode()}")
        raise AssertionError

    def date_time(self) -> tuple[float, int]:
        """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` → (epoch seconds, zone in minutes)."""
        m = re.compile(rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
                       ).match(self.buf, self.pos)
        if not m or m.group(2).decode().lower() not in MONTHS:
            if self.peek() == b'"':
                start = self.pos
                self.quoted()  # an unterminated one: Missing '"'
                self.pos = start
                self.fail('Invalid date-time (expected a date-time such as "01-Feb-2024 10:00:00 +0000")')
            self.expected('a date-time such as "01-Feb-2024 10:00:00 +0000"')
        self.pos = m.end()
        day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
        offset = (int(zh) * 60 + int(zm)) * (-1 if sign == b"-" else 1)
        try:
            dt = datetime(int(year), MONTHS[m.group(2).decode().lower()], int(day.strip()), int(hh), int(mm),
                          int(ss), tzinfo=timezone(timedelta(minutes=offset)))
        except ValueError:
            self.fail(f"Invalid date-time: {m.group(0)[1:-1].decode()}")
        return dt.timestamp(), offset


