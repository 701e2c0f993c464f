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
    pass


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
    """A cursor over one command's bytes (literals inline, as on the wire)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.depth = 0
        self.invalid_mailbox: str | None = None

    def fail(self, message: str) -> None:
        raise _Fail(message)

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
            self.fail(f"expected {what or token.decode()}")

    def sp(self) -> None:
        if not self.take(b" "):
            self.fail("expected a space")

    def at_end(self) -> bool:
        rest = self.buf[self.pos:]
        return rest in (b"", b"\r\n", b"\n")

    def end(self) -> None:
        if not self.at_end():
            self.fail("unexpected characters at the end of the command")

    def _match(self, pattern: re.Pattern) -> bytes | None:
        m = pattern.match(self.buf, self.pos)
        if not m:
            return None
        self.pos = m.end()
        return m.group(0)

    def atom(self, what: str = "an atom") -> str:
        value = self._match(_ATOM_CHAR)
        if value is None:
            self.fail(f"expected {what}")
        return value.decode("ascii")

    def number(self, *, nonzero: bool = False, what: str = "a number") -> int:
        value = self._match(_NUMBER)
        if value is None or len(value) > 19:
            self.fail(f"expected {what}")
        n = int(value)
        if n > MAX_NUMBER or (nonzero and n == 0):
            self.fail(f"expected {what}")
        return n

    def quoted(self) -> bytes:
        if not self.take(b'"'):
            self.fail("expected a quoted string")
        out = bytearray()
        buf = self.buf
        while True:
            if self.pos >= len(buf):
                self.fail("unterminated quoted string")
            c = buf[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                nxt = buf[self.pos + 1:self.pos + 2]
                if nxt not in (b'"', b"\\"):
                    self.fail("bad escape in quoted string")
                out += nxt
                self.pos += 2
                continue
            if c in (0x0D, 0x0A, 0x00):
                self.fail("CR, LF or NUL in a quoted string")
            out.append(c)
            self.pos += 1

    def literal(self) -> bytes:
        m = _LITERAL.match(self.buf, self.pos)
        if not m:
            self.fail("expected a literal")
        n = int(m.group(1))
        start = m.end()
        if start + n > len(self.buf):
            self.fail("literal shorter than announced")
        self.pos = start + n
        return self.buf[start:start + n]

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        self.fail("expected a string")
        raise AssertionError

    def astring(self, what: str = "a string") -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string()
        value = self._match(_ASTRING_CHAR)
        if value is None:
            self.fail(f"expected {what}")
        return value

    def nstring(self) -> bytes | None:
        if self.take(b"NIL"):
            return None
        return self.string()

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
            self.fail("reference is neither modified UTF-7 nor UTF-8")
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (b'"', b"{"):
            raw = self.string()
        else:
            raw = self._match(_LIST_CHAR)
            if raw is None:
                self.fail("expected a mailbox pattern")
        try:
            return utf7.from_wire(raw)
        except UnicodeDecodeError:
            self.fail("mailbox pattern is neither modified UTF-7 nor UTF-8")
        raise AssertionError

    def paren_list(self, item: Callable[[], Any], *, allow_empty: bool = True) -> list:
        self.expect(b"(", "(")
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail("too deeply nested")
        items: list = []
        if self.take(b")"):
            if not allow_empty:
                self.fail("empty list")
            self.depth -= 1
            return items
        while True:
            items.append(item())
            if self.take(b")"):
                self.depth -= 1
                return items
            self.sp()

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom("a flag")
        return self.atom("a flag")

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

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

    def seq_set(self) -> SeqSet:
        ranges = []
        while True:
            a = self.seq_number()
            b = a
            if self.take(b":"):
                b = self.seq_number()
            ranges.append((a, b))
            if not self.take(b","):
                break
        return SeqSet(tuple(ranges))

    def date(self) -> date:
        quoted = self.take(b'"')
        m = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})").match(self.buf, self.pos)
        if not m or m.group(2).decode().lower() not in MONTHS:
            self.fail("expected a date (d-Mon-yyyy)")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', 'a closing "')
        try:
            return date(int(m.group(3)), MONTHS[m.group(2).decode().lower()], int(m.group(1)))
        except ValueError:
            self.fail("not a valid date")
        raise AssertionError

    def date_time(self) -> tuple[float, int]:
        """``"dd-Mon-yyyy hh:mm:ss +zzzz"`` → (epoch seconds, zone in minutes)."""
        m = re.compile(rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
                       ).match(self.buf, self.pos)
        if not m or m.group(2).decode().lower() not in MONTHS:
            self.fail("expected a date-time")
        self.pos = m.end()
        day, _, year, hh, mm, ss, sign, zh, zm = m.groups()
        offset = (int(zh) * 60 + int(zm)) * (-1 if sign == b"-" else 1)
        try:
            dt = datetime(int(year), MONTHS[m.group(2).decode().lower()], int(day.strip()), int(hh), int(mm),
                          int(ss), tzinfo=timezone(timedelta(minutes=offset)))
        except ValueError:
            self.fail("not a valid date-time")
        return dt.timestamp(), offset


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

def parse_command(buf: bytes) -> Command:
    """Parse one complete command (CRLF-terminated, literals inline)."""
    r = Reader(buf)
    tag_bytes = r._match(_TAG)
    if tag_bytes is None:
        raise BadCommand(None, "Error in IMAP command: no tag")
    tag = tag_bytes.decode("ascii")
    name = ""
    try:
        r.sp()
        name = r.atom("a command name").upper()
        uid = False
        if name == "UID":
            r.sp()
            name = r.atom("a command name").upper()
            if name not in UID_COMMANDS:
                raise BadCommand(tag, f"Unknown UID command {name[:40]}")
            uid = True
        handler = COMMANDS.get(name)
        if handler is None:
            raise BadCommand(tag, f"Unknown command {name[:40]}")
        args = handler(r) or {}
        if name == "EXPUNGE" and (args.get("set") is None) == uid:
            r.fail("UID EXPUNGE takes a UID set, EXPUNGE takes no arguments")
        r.end()
    except _Fail as exc:
        where = f" {name[:40]}" if name else ""
        raise BadCommand(tag, f"Error in IMAP command{where}: {exc}") from None
    except RecursionError:
        raise BadCommand(tag, "Error in IMAP command: too deeply nested") from None
    return Command(tag, name, uid, args, r.invalid_mailbox)


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
                r.fail("expected a base64 initial response")
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
                r.fail(f"unknown SELECT parameter {p}")
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
        select = [s.upper() for s in r.paren_list(lambda: r.atom("a selection option"))]
        for s in select:
            if s not in LIST_SELECT:
                r.fail(f"unknown LIST selection option {s}")
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
        r.expect(b"RETURN", "RETURN")
        r.sp()
        extended = True

        def ret_opt():
            opt = r.atom("a return option").upper()
            if opt == "STATUS":
                r.sp()
                items = [i.upper() for i in r.paren_list(lambda: r.atom("a status item"), allow_empty=False)]
                for i in items:
                    if i not in STATUS_ITEMS:
                        r.fail(f"unknown STATUS item {i}")
                status.extend(items)
            elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                r.fail(f"unknown LIST return option {opt}")
            return opt

        returns = r.paren_list(ret_opt)
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
    items = [i.upper() for i in r.paren_list(lambda: r.atom("a status item"), allow_empty=False)]
    for i in items:
        if i not in STATUS_ITEMS:
            r.fail(f"unknown STATUS item {i}")
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
        r.fail("expected the message as a literal")
    message = r.literal()
    return {"mailbox": mailbox, "flags": flags, "date": when, "message": message}


def _enable(r: Reader) -> dict:
    caps = []
    while r.take(b" "):
        caps.append(r.atom("a capability").upper())
    if not caps:
        r.fail("expected capability names")
    return {"capabilities": caps}


def _id(r: Reader) -> dict:
    r.sp()
    if r.take(b"NIL"):
        return {"params": None}

    pairs: list[bytes | None] = []

    def item():
        pairs.append(r.nstring())
        return None

    r.paren_list(item)
    if len(pairs) % 2 or len(pairs) > 60:
        r.fail("ID takes field/value pairs (at most 30)")
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

    r.paren_list(item)
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
    r.expect(b"[", "[")
    part: list[int] = []
    text = ""
    fields: tuple[bytes, ...] = ()
    if r.take(b"]"):
        return Section()
    while r.peek().isdigit():
        part.append(r.number(nonzero=True, what="a part number"))
        if not r.take(b"."):
            break
    if r.peek() != b"]":
        word = r._match(re.compile(rb"[A-Za-z.]+"))
        word_s = (word or b"").decode().upper()
        if word_s in ("HEADER", "TEXT") or (word_s == "MIME" and part):
            text = word_s
        elif word_s in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            text = word_s
            r.sp()
            fields = tuple(f.upper() if f.isascii() else f for f in r.paren_list(
                lambda: r.astring("a header field name"), allow_empty=False))
        else:
            r.fail("unknown section text")
    r.expect(b"]", "]")
    return Section(tuple(part), text, fields)


def _fetch_att(r: Reader) -> FetchAtt:
    word = r._match(re.compile(rb"[A-Za-z0-9.]+"))
    if word is None:
        r.fail("expected a fetch attribute")
    name = word.decode().upper()
    if name in ("BODY", "BODY.PEEK") and r.peek() == b"[":
        section = _section(r)
        partial = None
        if r.take(b"<"):
            origin = r.number()
            r.expect(b".", ".")
            count = r.number(nonzero=True, what="a non-zero octet count")
            r.expect(b">", ">")
            partial = (origin, count)
        return FetchAtt("BODY", section, name == "BODY.PEEK", partial)
    if name == "BODY":
        return FetchAtt("BODY")
    if name in _SIMPLE_ATTS:
        return FetchAtt(name)
    r.fail(f"unknown fetch attribute {name[:30]}")
    raise AssertionError


def _fetch(r: Reader) -> dict:
    r.sp()
    seqset = r.seq_set()
    r.sp()
    if r.peek() == b"(":
        atts = r.paren_list(lambda: _fetch_att(r), allow_empty=False)
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
        def modifier():
            name = r.atom("a fetch modifier").upper()
            if name != "CHANGEDSINCE":
                r.fail(f"unknown FETCH modifier {name}")
            r.sp()
            return r.number(nonzero=True, what="a mod-sequence")

        mods = r.paren_list(modifier, allow_empty=False)
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
                r.fail(f"unknown STORE modifier {name}")
            r.sp()
            return r.number(what="a mod-sequence")

        unchangedsince = r.paren_list(modifier, allow_empty=False)[-1]
        r.sp()
    m = r._match(re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.I))
    if m is None:
        r.fail("expected FLAGS, +FLAGS or -FLAGS")
    mode = {b"+": "add", b"-": "remove", b"": "replace"}[m[:1] if m[:1] in (b"+", b"-") else b""]
    silent = m.upper().endswith(b".SILENT")
    r.sp()
    flags = r.store_flags()
    for f in flags:
        if f == "\\*" or (f.startswith("\\") and f.lower() not in
                          ("\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft", "\\recent")):
            r.fail(f"invalid flag {f}")
    return {"set": seqset, "mode": mode, "silent": silent, "flags": flags, "unchangedsince": unchangedsince}


def _copy(r: Reader) -> dict:
    r.sp()
    seqset = r.seq_set()
    r.sp()
    return {"set": seqset, "mailbox": r.mailbox()}


def _uid_expunge(r: Reader) -> dict:
    if r.take(b" "):
        return {"set": r.seq_set()}
    return {"set": None}


# -- SEARCH -----------------------------------------------------------------------

_NOARG_KEYS = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
               "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_STRING_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_KEYS = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def _search_key(r: Reader, depth: int = 0) -> tuple:
    if depth > MAX_NESTING:
        r.fail("search keys nested too deeply")
    if r.peek() == b"(":
        r.pos += 1
        keys = [_search_key(r, depth + 1)]
        while r.take(b" "):
            keys.append(_search_key(r, depth + 1))
        r.expect(b")", ")")
        return ("and", keys)
    c = r.peek()
    if c == b"*" or c.isdigit():
        return ("seq", r.seq_set())
    word = r._match(re.compile(rb"[A-Za-z]+"))
    if word is None:
        r.fail("expected a search key")
    key = word.decode().upper()
    if key in _NOARG_KEYS:
        return (key.lower(),)
    if key in _STRING_KEYS:
        r.sp()
        return ("text", key.lower(), r.astring("a search string"))
    if key == "HEADER":
        r.sp()
        field = r.astring("a header field name")
        r.sp()
        return ("header", field.decode("ascii", "replace"), r.astring("a search string"))
    if key in _DATE_KEYS:
        r.sp()
        return ("date", key.lower(), r.date())
    if key in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return (key.lower(), r.atom("a keyword"))
    if key in ("LARGER", "SMALLER"):
        r.sp()
        return (key.lower(), r.number())
    if key == "NOT":
        r.sp()
        return ("not", _search_key(r, depth + 1))
    if key == "OR":
        r.sp()
        a = _search_key(r, depth + 1)
        r.sp()
        return ("or", a, _search_key(r, depth + 1))
    if key == "UID":
        r.sp()
        return ("uid", r.seq_set())
    if key == "MODSEQ":
        r.sp()
        if r.peek() == b'"':  # entry-name entry-type-req
            r.quoted()
            r.sp()
            r.atom("an entry type")
            r.sp()
        return ("modseq", r.number(what="a mod-sequence"))
    r.fail(f"unknown search key {key[:30]}")
    raise AssertionError


def _search(r: Reader) -> dict:
    r.sp()
    charset = None
    if r.take(b"CHARSET "):
        charset = r.astring("a charset").decode("ascii", "replace")
        r.sp()
    keys = [_search_key(r)]
    while r.take(b" "):
        keys.append(_search_key(r))
    return {"charset": charset, "keys": ("and", keys)}


COMMANDS: dict[str, Callable[[Reader], dict | None]] = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none,
    "AUTHENTICATE": _authenticate, "LOGIN": _login,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "DELETE": _mailbox_only,
    "RENAME": _rename, "SUBSCRIBE": _mailbox_only, "UNSUBSCRIBE": _mailbox_only,
    "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "CHECK": _none, "CLOSE": _none, "EXPUNGE": _uid_expunge, "UNSELECT": _none,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "IDLE": _none, "NAMESPACE": _none, "ENABLE": _enable, "ID": _id,
    "GETQUOTA": _quota_root, "GETQUOTAROOT": _mailbox_only, "SETQUOTA": _setquota,
}
UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"}
