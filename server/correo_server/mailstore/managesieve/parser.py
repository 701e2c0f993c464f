"""ManageSieve command lines → :class:`Command` values (RFC 5804 section 4), no I/O.

A command is an atom and then strings and numbers.  Strings are quoted
(``"..."``, at most 1024 octets, ``\\"`` and ``\\\\`` escaped) or literals
(``{n+}`` CRLF and n octets; ``{n}`` is taken the same way, as Dovecot does,
since ManageSieve never asks the client to wait).  :mod:`.server` reads a
line, asks :func:`literal_length` whether a literal follows, reads it and the
rest of the command, and hands the whole to :func:`parse`.  Whether a
command is allowed in the session's state is :mod:`.states`' business.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_QUOTED = 1024
MAX_NUMBER = 2**32 - 1

# name → (minimum, maximum, kinds): "s" string, "n" number
ARITY: dict[str, tuple[int, int, str]] = {
    "AUTHENTICATE": (1, 2, "ss"),
    "STARTTLS": (0, 0, ""),
    "LOGOUT": (0, 0, ""),
    "CAPABILITY": (0, 0, ""),
    "NOOP": (0, 1, "s"),
    "HAVESPACE": (2, 2, "sn"),
    "PUTSCRIPT": (2, 2, "ss"),
    "CHECKSCRIPT": (1, 1, "s"),
    "LISTSCRIPTS": (0, 0, ""),
    "SETACTIVE": (1, 1, "s"),
    "GETSCRIPT": (1, 1, "s"),
    "DELETESCRIPT": (1, 1, "s"),
    "RENAMESCRIPT": (2, 2, "ss"),
    "UNAUTHENTICATE": (0, 0, ""),
}

_LITERAL_AT_END = re.compile(rb"\{([0-9]{1,10})(\+?)\}\r?\n\Z")
_ATOM = re.compile(rb"[!#-'*-\[\]-z|-~]+")


class ParseError(ValueError):
    """Not a valid command; ``str()`` is the text of the NO reply."""


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[bytes | int, ...] = ()

    def text(self, index: int) -> str:
        value = self.args[index]
        assert isinstance(value, bytes)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Strings must be UTF-8.") from None

    def __repr__(self) -> str:  # keep secrets and scripts out of logs
        if self.name == "AUTHENTICATE":
            return f"Command('AUTHENTICATE', <{len(self.args)} hidden>)"
        shown = tuple(a if isinstance(a, int) or len(a) <= 80 else f"<{len(a)} octets>" for a in self.args)
        return f"Command({self.name!r}, {shown!r})"


def literal_length(line: bytes) -> int | None:
    """The length announced by a ``{n+}`` at the end of this line, if any."""
    m = _LITERAL_AT_END.search(line)
    return int(m.group(1)) if m else None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.data.startswith(b"\r\n", self.pos) or self.data.startswith(b"\n", self.pos) \
            or self.pos >= len(self.data)

    def space(self) -> None:
        if not self.data.startswith(b" ", self.pos):
            raise ParseError("Expected a space between arguments.")
        self.pos += 1

    def string(self) -> bytes:
        data, pos = self.data, self.pos
        if data.startswith(b'"', pos):
            out = bytearray()
            pos += 1
            while True:
                if pos >= len(data):
                    raise ParseError("Unterminated quoted string.")
                ch = data[pos]
                if ch == 0x5C:  # backslash
                    if pos + 1 >= len(data) or data[pos + 1] not in (0x22, 0x5C):
                        raise ParseError('In a quoted string, only \\" and \\\\ may be escaped.')
                    out.append(data[pos + 1])
                    pos += 2
                elif ch == 0x22:
                    pos += 1
                    break
                elif ch in (0x0D, 0x0A):
                    raise ParseError("Unterminated quoted string (a quoted string cannot span lines; "
                                     "send a literal).")
                elif ch == 0x00:
                    raise ParseError("A quoted string cannot hold NUL.")
                else:
                    out.append(ch)
                    pos += 1
                if len(out) > MAX_QUOTED:
                    raise ParseError(f"A quoted string holds at most {MAX_QUOTED} octets; send a literal.")
            self.pos = pos
            return bytes(out)
        m = re.compile(rb"\{([0-9]{1,10})\+?\}\r?\n").match(data, pos)
        if m:
            size = int(m.group(1))
            start = m.end()
            if start + size > len(data):
                raise ParseError("The literal is shorter than announced.")
            self.pos = start + size
            return data[start:start + size]
        raise ParseError("Expected a string (\"...\" or {n+}).")

    def number(self) -> int:
        m = re.compile(rb"[0-9]+").match(self.data, self.pos)
        if not m:
            raise ParseError("Expected a number.")
        text = m.group(0)
        if len(text) > 1 and text.startswith(b"0"):
            raise ParseError("Numbers have no leading zeros.")
        value = int(text)
        if value > MAX_NUMBER:
            raise ParseError("The number is too large.")
        self.pos = m.end()
        return value


def parse(data: bytes) -> Command:
    """A whole command, literals included, with its final CRLF."""
    m = _ATOM.match(data)
    if not m:
        raise ParseError("Expected a command name.")
    name = m.group(0).decode("ascii").upper()
    if name not in ARITY:
        raise ParseError(f"Unknown command {name[:40]}.")
    low, high, kinds = ARITY[name]
    r = _Reader(data)
    r.pos = m.end()
    args: list[bytes | int] = []
    while not r.at_end():
        if not data.startswith(b" ", r.pos):
            raise ParseError("Unexpected text after the arguments.")
        if len(args) >= high:
            raise ParseError(f"Too many arguments for {name}.")
        r.space()
        args.append(r.number() if kinds[len(args)] == "n" else r.string())
    if len(args) < low:
        raise ParseError(f"{name} needs {low} argument{'s' if low > 1 else ''}.")
    rest = data[r.pos:]
    if rest not in (b"\r\n", b"\n", b""):
        raise ParseError("Unexpected text after the arguments.")
    return Command(name, tuple(args))


def parse_sasl_response(data: bytes) -> bytes:
    """A client's SASL response line: one string (quoted or literal)."""
    r = _Reader(data)
    value = r.string()
    if not r.at_end() or data[r.pos:] not in (b"\r\n", b"\n", b""):
        raise ParseError("Expected one string as the SASL response.")
    return value
