"""Parsing IMAP commands from a buffer (RFC 3501 section 9, and the
extensions the server offers).  No I/O here.

:mod:`.server` collects one whole command — its lines and the literals they
announce, exactly as they came over the wire — and hands the bytes to
:func:`parse_command`, which returns a :class:`Command` or raises
:class:`BadCommand` (answered ``BAD``, with the tag when one could be read).
:func:`literal_at_end` and :func:`tag_of` are the two small decisions the
reader needs while collecting.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from . import utf7

MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}

_ATOM_CHAR = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]\x80-\xff]+")
_ASTRING_CHAR = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\x80-\xff]+")
_TAG = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\+\x80-\xff]+")
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


class _Fail(Exception):
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
    m = _TAG.match(line)
    if not m or (len(line) > m.end() and line[m.end():m.end() + 1] not in (b" ", b"\r", b"\n")):
        return None
    return m.group(0).decode("ascii")


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SeqSet:
    """A sequence-set; ``None`` in a range stands for ``*``."""

    ranges: tuple[tuple[int | None, int | None], ...]

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


@dataclass(frozen=True)
class Section:
    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[bytes, ...] = ()

    def spec(self) -> bytes:
        """The section as echoed in the response: ``1.2.HEADER.FIELDS (FROM)``."""
        parts = [".".join(str(p) for p in self.part).encode()] if self.part else []
        if self.text:
            parts.append(self.text.encode())
        out = b".".join(parts)
        if self.text.startswith("HEADER.FIELDS"):
            from .responses import astring
            out += b" (" + b" ".join(astring(f) for f in self.fields) + b")"
        return out


@dataclass(frozen=True)
class FetchAtt:
    name: str  # ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ
    section: Section | None = None  # for BODY[...] / BODY.PEEK[...]
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, count)


@dataclass
class Command:
    tag: str
    name: str  # upper case; "FETCH" for both FETCH and UID FETCH
    uid: bool = False
    args: dict[str, Any] = field(default_factory=dict)
    invalid_mailbox: str | None = None  # a mailbox argument that is not modified UTF-7 (refused NO)


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

    def fail(self, message: str) -> None:
        raise _Fail(message)

    def fail_usage(self, message: str) -> None:
        """Fail with a message that stands on its own (it names the command)."""
        raise _Fail(message, whole=True)

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

    def _match(self, pattern: re.Pattern) -> bytes | None:
        m = pattern.match(self.buf, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def atom(self, what: str = "an atom") -> str:
        value = self._match(_ATOM_CHAR)
        if value is None:
            self.expected(what)
        return value.decode("ascii")

    def number(self, *, nonzero: bool = False, what: str = "a number") -> int:
        start = self.pos
        value = self._match(_NUMBER)
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
        value = self._match(_ASTRING_CHAR)
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
        name = raw.decode("utf-8", "replace")
        if not raw.isascii() or not utf7.is_valid(name):
            if self.invalid_mailbox is None:
                self.invalid_mailbox = name
            return name
        if name.upper() == "INBOX":
            return "INBOX"
        return name

    def reference(self) -> str:
        """The reference of LIST/LSUB: like a pattern, not a mailbox name —
        an 8-bit UTF-8 reference is converted to modified UTF-7 and an
        invalid one simply matches nothing (as in Dovecot)."""
        raw = self.astring("a reference")
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
            raw = self._match(_LIST_CHAR)
            if raw is None:
                self.expected("a mailbox pattern")
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
        except _Fail:
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


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

USAGE = {
    "LOGIN": "{cmd} needs a user name and a password",
    "AUTHENTICATE": "{cmd} needs a mechanism name",
    "SELECT": "{cmd} needs a mailbox name", "EXAMINE": "{cmd} needs a mailbox name",
    "CREATE": "{cmd} needs a mailbox name", "DELETE": "{cmd} needs a mailbox name",
    "SUBSCRIBE": "{cmd} needs a mailbox name", "UNSUBSCRIBE": "{cmd} needs a mailbox name",
    "GETQUOTAROOT": "{cmd} needs a mailbox name",
    "RENAME": "{cmd} needs the old and the new mailbox name",
    "LIST": "{cmd} needs a reference and a mailbox name", "LSUB": "{cmd} needs a reference and a mailbox name",
    "STATUS": "{cmd} needs a mailbox name and a list of status items",
    "APPEND": "{cmd} needs a mailbox name and a message",
    "FETCH": "{cmd} needs a {set} and the data items to fetch",
    "STORE": "{cmd} needs a {set}, FLAGS, +FLAGS or -FLAGS, and flags",
    "COPY": "{cmd} needs a {set} and a mailbox name", "MOVE": "{cmd} needs a {set} and a mailbox name",
    "EXPUNGE": "{cmd} needs a {set}",
    "SEARCH": "{cmd} needs search criteria",
    "ENABLE": "{cmd} needs capability names",
    "ID": "{cmd} needs a list of field/value pairs, or NIL",
    "GETQUOTA": "{cmd} needs a quota root", "SETQUOTA": "{cmd} needs a quota root and a list of limits",
}
"""What each command needs, said when it ends too early (``a19 LIST`` →
``BAD LIST needs a reference and a mailbox name``)."""


def parse_command(buf: bytes) -> Command:
    """Parse one complete command (CRLF-terminated, literals inline)."""
    r = Reader(buf)
    tag_bytes = r._match(_TAG)
    if tag_bytes is None:
        raise BadCommand(None, "Error in IMAP command: no tag")
    tag = tag_bytes.decode("ascii")
    name = ""
    uid = False
    try:
        r.sp()
        name = r.atom("a command name").upper()
        if name == "UID":
            r.usage = "UID needs a command: FETCH, STORE, SEARCH, COPY, MOVE or EXPUNGE"
            r.sp()
            name = r.atom("a command name").upper()
            if name not in UID_COMMANDS:
                raise BadCommand(tag, f"Unknown UID command {name[:40]}")
            uid = True
        handler = COMMANDS.get(name)
        if handler is None:
            raise BadCommand(tag, f"Unknown command {name[:40]}")
        r.usage = USAGE.get(name, "Missing arguments").format(
            cmd=("UID " if uid else "") + name, set="UID set" if uid else "message set")
        args = handler(r, uid) if name == "EXPUNGE" else handler(r)
        r.end()
    except _Fail as exc:
        if exc.whole:
            raise BadCommand(tag, str(exc)) from None
        where = f" {'UID ' if uid else ''}{name[:40]}" if name else ""
        raise BadCommand(tag, f"Error in IMAP command{where}: {exc}") from None
    except RecursionError:
        raise BadCommand(tag, "Error in IMAP command: Too deeply nested") from None
    return Command(tag, name, uid, args or {}, r.invalid_mailbox)


def _none(r: Reader) -> None:
    return None


def _login(r: Reader) -> dict:
    r.sp()
    user = r.astring("a user name")
    r.sp()
    password = r.astring("a password")
    return {"user": user, "password": password}


def _authenticate(r: Reader) -> dict:
    r.sp()
    mech = r.atom("a mechanism").upper()
    initial = None
    if r.take(b" "):
        if r.take(b"="):
            initial = b""
        else:
            value = r._match(re.compile(rb"[A-Za-z0-9+/]+=*"))
            if value is None:
                r.fail("Invalid base64 initial response")
            initial = value
    return {"mechanism": mech, "initial": initial}


def _mailbox_only(r: Reader) -> dict:
    r.sp()
    return {"mailbox": r.mailbox()}


def _select(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    if r.take(b" "):
        params = r.paren_list(lambda: r.atom("a select parameter").upper())
        for p in params:
            if p == "CONDSTORE":
                condstore = True
            else:
                r.fail(f"Unknown SELECT parameter {p[:40]}")
    return {"mailbox": mailbox, "condstore": condstore}


def _create(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    if r.take(b" "):  # CREATE-SPECIAL-USE style parameters are accepted and ignored
        r.paren_list(lambda: _skip_value(r))
    return {"mailbox": mailbox}


def _skip_value(r: Reader) -> None:
    if r.peek() == b"(":
        r.paren_list(lambda: _skip_value(r))
    elif r.take(b"\\"):
        r.atom()
    else:
        r.astring()


def _rename(r: Reader) -> dict:
    r.sp()
    old = r.mailbox()
    r.sp()
    return {"old": old, "new": r.mailbox()}


LIST_SELECT = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE"}


def _list(r: Reader) -> dict:
    r.sp()
    select: list[str] = []
    extended = False
    if r.peek() == b"(":
        extended = True
        select = [s.upper() for s in r.paren_list(lambda: r.atom("a selection option"),
                                                   what="a list of selection options")]
        for s in select:
            if s not in LIST_SELECT:
                r.fail(f"Unknown LIST selection option {s[:40]}")
        if "RECURSIVEMATCH" in select and len(set(select) - {"RECURSIVEMATCH", "REMOTE"}) == 0:
            r.fail("RECURSIVEMATCH needs another selection option")
        r.sp()
    reference = r.reference()
    r.sp()
    if r.peek() == b"(":
        extended = True
        patterns = r.paren_list(r.list_mailbox, allow_empty=False)
    else:
        patterns = [r.list_mailbox()]
    returns: list[str] = []
    status: list[str] = []
    if r.take(b" "):
        r.expect(b"RETURN", "RETURN and return options")
        r.sp("RETURN needs a list of return options")
        extended = True

        def ret_opt():
            opt = r.atom("a return option").upper()
            if opt == "STATUS":
                r.sp()
                items = [i.upper() for i in r.paren_list(lambda: r.atom("a status item"), allow_empty=False,
                                                         what="a list of status items")]
                for i in items:
                    if i not in STATUS_ITEMS:
                        r.fail(f"Unknown STATUS item {i[:40]}")
                status.extend(items)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                r.fail(f"Unknown LIST return option {opt[:40]}")
            return opt

        returns = r.paren_list(ret_opt, what="a list of return options")
    return {"reference": reference, "patterns": patterns, "select": select, "returns": returns,
            "status": status, "extended": extended}


def _lsub(r: Reader) -> dict:
    r.sp()
    reference = r.reference()
    r.sp()
    return {"reference": reference, "patterns": [r.list_mailbox()]}


def _status(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = [i.upper() for i in r.paren_list(lambda: r.atom("a status item"), allow_empty=False,
                                             what="a list of status items")]
    for i in items:
        if i not in STATUS_ITEMS:
            r.fail(f"Unknown STATUS item {i[:40]}")
    return {"mailbox": mailbox, "items": items}


def _append(r: Reader) -> dict:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: list[str] = []
    when = None
    if r.peek() == b"(":
        flags = r.flag_list()
        r.sp()
    if r.peek() == b'"':
        when = r.date_time()
        r.sp()
    if r.peek() != b"{":
        r.expected("the message as a literal ({size})")
    message = r.literal()
    return {"mailbox": mailbox, "flags": flags, "date": when, "message": message}


def _enable(r: Reader) -> dict:
    caps = []
    while r.take(b" "):
        caps.append(r.atom("a capability").upper())
    if not caps:
        if r.at_end():
            r.missing()
        r.expected("capability names")
    return {"capabilities": caps}


def _id(r: Reader) -> dict:
    r.sp()
    if r.take(b"NIL"):
        return {"params": None}

    pairs: list[bytes | None] = []

    def item():
        pairs.append(r.nstring())
        return None

    r.paren_list(item, what="a list of field/value pairs, or NIL")
    if len(pairs) % 2 or len(pairs) > 60:
        r.fail_usage("ID takes field/value pairs (at most 30)")
    return {"params": {(pairs[i] or b"").decode("utf-8", "replace"): pairs[i + 1] for i in range(0, len(pairs), 2)}}


def _quota_root(r: Reader) -> dict:
    r.sp()
    return {"root": r.astring("a quota root").decode("utf-8", "replace")}


def _setquota(r: Reader) -> dict:
    r.sp()
    root = r.astring("a quota root")
    r.sp()
    limits: list[tuple[str, int]] = []

    def item():
        name = r.atom("a resource name").upper()
        r.sp()
        limits.append((name, r.number(what="a limit")))

    r.paren_list(item, what="a list of limits")
    return {"root": root.decode("utf-8", "replace"), "limits": limits}


# -- FETCH ------------------------------------------------------------------------

_SIMPLE_ATTS = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
                "RFC822", "BODYSTRUCTURE", "UID", "MODSEQ")
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


def _section(r: Reader) -> Section:
    r.open(b"[", "]", "'['")
    part: list[int] = []
    text = ""
    fields: tuple[bytes, ...] = ()
    if r.take(b"]"):
        r.closers.pop()
        return Section()
    while r.peek().isdigit():
        part.append(r.number(nonzero=True, what="a part number"))
        if not r.take(b"."):
            break
    if r.peek() != b"]":
        word = r._match(re.compile(rb"[A-Za-z.]+"))
        if word is None:
            r.expected("a section: a part number, HEADER, HEADER.FIELDS, TEXT or MIME")
        word_s = word.decode().upper()
        if word_s in ("HEADER", "TEXT") or (word_s == "MIME" and part):
            text = word_s
        elif word_s in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            text = word_s
            if not r.take(b" "):
                r.fail(f"{word_s} needs a list of header field names")
            fields = tuple(f.upper() if f.isascii() else f for f in r.paren_list(
                lambda: r.astring("a header field name"), allow_empty=False, what="a list of header field names"))
        else:
            r.fail(f"Invalid section {word_s[:30]}" + (" (MIME needs a part number)" if word_s == "MIME" else ""))
    r.close(b"]")
    return Section(tuple(part), text, fields)


_PARTIAL = re.compile(rb"<([0-9]{1,19})\.([0-9]{1,19})>")


def _fetch_att(r: Reader) -> FetchAtt:
    word = r._match(re.compile(rb"[A-Za-z0-9.]+"))
    if word is None:
        r.expected("a fetch attribute")
    name = word.decode().upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        section = _section(r)
        partial = None
        if r.peek() == b"<":
            m = r._match(_PARTIAL)
            if m is None or int(_PARTIAL.match(m).group(2)) == 0:
                r.fail("Invalid partial fetch: expected <offset.length> with a length above 0, e.g. <0.1024>")
            origin, count = (int(n) for n in _PARTIAL.match(m).groups())
            partial = (origin, count)
        return FetchAtt("BODY", section, name == "BODY.PEEK", partial)
    if name == "BODY":
        return FetchAtt("BODY")
    if name in _SIMPLE_ATTS:
        return FetchAtt(name)
    r.fail(f"Unknown fetch attribute {name[:30]}")
    raise AssertionError


def _fetch(r: Reader) -> dict:
    r.sp()
    seqset = r.seq_set()
    r.sp()
    if r.peek() == b"(":
        atts = r.paren_list(lambda: _fetch_att(r), allow_empty=False, what="a list of fetch attributes")
    else:
        word = r._match(re.compile(rb"[A-Za-z]+(?=[ \r\n]|\Z)"))
        if word is not None and word.decode().upper() in MACROS:
            atts = [FetchAtt(n) for n in MACROS[word.decode().upper()]]
        else:
            if word is not None:
                r.pos -= len(word)
            atts = [_fetch_att(r)]
    changedsince = None
    if r.take(b" "):
        if r.at_end():
            r.fail("Missing FETCH modifiers after the space")
        if r.peek() != b"(":
            r.fail("Too many arguments (several fetch attributes go in parentheses: (FLAGS UID))")

        def modifier():
            name = r.atom("a fetch modifier").upper()
            if name != "CHANGEDSINCE":
                r.fail(f"Unknown FETCH modifier {name[:40]}")
            r.sp()
            return r.number(nonzero=True, what="a mod-sequence")

        mods = r.paren_list(modifier, allow_empty=False, what="a list of FETCH modifiers")
        changedsince = mods[-1]
    return {"set": seqset, "atts": atts, "changedsince": changedsince}


# -- STORE ------------------------------------------------------------------------

def _store(r: Reader) -> dict:
    r.sp()
    seqset = r.seq_set()
    r.sp()
    unchangedsince = None
    if r.peek() == b"(":
        def modifier():
            name = r.atom("a store modifier").upper()
            if name != "UNCHANGEDSINCE":
                r.fail(f"Unknown STORE modifier {name[:40]}")
            r.sp()
            return r.number(what="a mod-sequence")

        unchangedsince = r.paren_list(modifier, allow_empty=False, what="a list of STORE modifiers")[-1]
        r.sp()
    m = r._match(re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.I))
    if m is None:
        r.expected("FLAGS, +FLAGS or -FLAGS")
    mode = {b"+": "add", b"-": "remove", b"": "replace"}[m[:1] if m[:1] in (b"+", b"-") else b""]
    silent = m.upper().endswith(b".SILENT")
    r.sp("Missing the flags to set, add or remove")
    flags = r.store_flags()
    for f in flags:
        if f == "\\*" or (f.startswith("\\") and f.lower() not in
                          ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft", "\\recent")):
            r.fail(f"Invalid flag {f[:40]}")
    return {"set": seqset, "mode": mode, "silent": silent, "flags": flags, "unchangedsince": unchangedsince}


def _copy(r: Reader) -> dict:
    r.sp()
    seqset = r.seq_set()
    r.sp()
    return {"set": seqset, "mailbox": r.mailbox()}


def _expunge(r: Reader, uid: bool) -> dict:
    """EXPUNGE takes nothing (anything after it is too many arguments);
    UID EXPUNGE (UIDPLUS) takes a UID set."""
    if not uid:
        return {"set": None}
    r.sp()
    return {"set": r.seq_set("a UID set")}


# -- SEARCH -----------------------------------------------------------------------

_NOARG_KEYS = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
               "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def _search_key(r: Reader, depth: int = 0) -> tuple:
    """One search key; a key that ends the command too early says what it
    needs (``FROM needs a search string``)."""
    if depth > MAX_NESTING:
        r.fail("Search keys nested too deeply")
    if r.peek() == b"(":
        r.open(b"(", ")", "'('")
        keys = [_search_key(r, depth + 1)]
        while r.take(b" "):
            keys.append(_search_key(r, depth + 1))
        r.close(b")")
        return ("and", keys)
    c = r.peek()
    if c == b"*" or c.isdigit():
        return ("seq", r.seq_set())
    word = r._match(re.compile(rb"[A-Za-z]+"))
    if word is None:
        r.expected("a search key")
    key = word.decode().upper()
    if key in _NOARG_KEYS:
        return (key.lower(),)
    if key in _STRING_KEYS:
        r.sp(f"{key} needs a search string")
        return ("text", key.lower(), r.astring("a search string"))
    if key == "HEADER":
        r.sp("HEADER needs a header field name and a search string")
        field = r.astring("a header field name")
        r.sp("HEADER needs a header field name and a search string")
        return ("header", field.decode("ascii", "replace"), r.astring("a search string"))
    if key in _DATE_KEYS:
        r.sp(f"{key} needs a date such as 1-Feb-2024")
        return ("date", key.lower(), r.date())
    if key in ("KEYWORD", "UNKEYWORD"):
        r.sp(f"{key} needs a keyword")
        return (key.lower(), r.atom("a keyword"))
    if key in ("LARGER", "SMALLER"):
        r.sp(f"{key} needs a size in octets")
        return (key.lower(), r.number(what="a size in octets"))
    if key == "NOT":
        r.sp("NOT needs a search key")
        return ("not", _search_key(r, depth + 1))
    if key == "OR":
        r.sp("OR needs two search keys")
        a = _search_key(r, depth + 1)
        r.sp("OR needs two search keys")
        return ("or", a, _search_key(r, depth + 1))
    if key == "UID":
        r.sp("UID needs a UID set")
        return ("uid", r.seq_set("a UID set"))
    if key == "MODSEQ":
        r.sp("MODSEQ needs a mod-sequence")
        if r.peek() == b'"':  # entry-name entry-type-req
            r.quoted()
            r.sp("MODSEQ needs a mod-sequence")
            r.atom("an entry type")
            r.sp("MODSEQ needs a mod-sequence")
        return ("modseq", r.number(what="a mod-sequence"))
    if key == "CHARSET":
        r.fail("CHARSET must come first")
    r.fail(f"Unknown search key {key[:30]}")
    raise AssertionError


def _search(r: Reader) -> dict:
    r.sp()
    charset = None
    if r.take(b"CHARSET") and (r.at_end() or r.peek() == b" "):
        r.sp("CHARSET needs a charset name, then search criteria")
        charset = r.astring("a charset").decode("ascii", "replace")
        r.sp("SEARCH needs search criteria after the charset")
    elif r.buf[r.pos - 7:r.pos].upper() == b"CHARSET" and r.pos >= 7 and r.buf[r.pos - 8:r.pos - 7] == b" ":
        r.pos -= 7  # a key that only starts with CHARSET
    keys = [_search_key(r)]
    while r.take(b" "):
        keys.append(_search_key(r))
    return {"charset": charset, "keys": ("and", keys)}


COMMANDS: dict[str, Callable[..., dict | None]] = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none,
    "AUTHENTICATE": _authenticate, "LOGIN": _login,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_only,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_only, "UNSUBSCRIBE": _mailbox_only,
    "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "CHECK": _none, "CLOSE": _none, "EXPUNGE": _expunge, "UNSELECT": _none,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "IDLE": _none, "NAMESPACE": _none, "ENABLE": _enable, "ID": _id,
    "GETQUOTA": _quota_root, "GETQUOTAROOT": _mailbox_only, "SETQUOTA": _setquota,
}
UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"}
