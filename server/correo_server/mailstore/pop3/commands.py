"""POP3 command lines → :class:`Command` values (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

Pure parsing, no I/O: :mod:`.server` reads a line from the socket and hands the
bytes here; what comes back is either a typed command or a :class:`CommandError`
whose text becomes the ``-ERR`` reply.  Whether a command is allowed in the
session's current state is decided by :mod:`.states`, not here.

The grammar (RFC 1939 section 3, RFC 2449 section 3): a case-insensitive keyword
of three or four printable characters, then arguments separated by single
spaces.  ``PASS`` takes the rest of the line as the password (RFC 1939 allows
spaces in it), ``USER`` likewise takes the rest of the line.
"""
from __future__ import annotations

from dataclasses import dataclass

# Every command a client may send, whatever the state, with the number of
# arguments it takes (min, max).  ``None`` for max: the rest of the line.
ARITY: dict[str, tuple[int, int | None]] = {
    "USER": (1, None),
    "PASS": (0, None),  # an empty password is a (wrong) password, not a syntax error
    "APOP": (2, 2),
    "AUTH": (0, 2),
    "STLS": (0, 0),
    "CAPA": (0, 0),
    "QUIT": (0, 0),
    "STAT": (0, 0),
    "LIST": (0, 1),
    "RETR": (1, 1),
    "DELE": (1, 1),
    "NOOP": (0, 0),
    "RSET": (0, 0),
    "TOP": (2, 2),
    "UIDL": (0, 1),
}

# Commands whose first argument is a message number; TOP's second is a line count.
_TAKES_MESSAGE_NUMBER = {"LIST", "RETR", "DELE", "TOP", "UIDL"}


class CommandError(ValueError):
    """A line that is not a valid command; ``str(error)`` is the reply text."""


@dataclass(frozen=True)
class Command:
    """One parsed command.  ``args`` are strings as sent (passwords included:
    never log a Command whose name is PASS or AUTH)."""

    name: str
    args: tuple[str, ...] = ()

    def number(self, index: int = 0) -> int:
        """The ``index``-th argument as an integer (already validated by :func:`parse`)."""
        return int(self.args[index])

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        if self.name in ("PASS", "AUTH", "APOP"):
            return f"Command({self.name!r}, <{len(self.args)} hidden>)"
        return f"Command({self.name!r}, {self.args!r})"


def _decimal(text: str, what: str, *, positive: bool) -> int:
    # RFC 1939 numbers are plain decimal: no sign, no spaces, no "0x".
    if not text.isascii() or not text.isdigit():
        raise CommandError(f"{what} must be a number")
    if len(text) > 10:
        raise CommandError(f"{what} out of range")
    value = int(text)
    if positive and value < 1:
        raise CommandError(f"{what} must be 1 or more")
    return value


def parse(line: bytes) -> Command:
    """Parse one command line (with or without its CRLF)."""
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("command line is not UTF-8") from None
    if not text or text.isspace():
        raise CommandError("empty command")
    if any(ch in text for ch in "\r\n\x00"):
        raise CommandError("control characters in command line")
    keyword, sep, rest = text.partition(" ")
    name = keyword.upper()
    if name not in ARITY:
        if not 3 <= len(keyword) <= 4 or not keyword.isascii() or not keyword.isalpha():
            raise CommandError("unknown command")
        raise CommandError(f"unknown command {name}")
    low, high = ARITY[name]
    if high is None:
        # USER / PASS: the rest of the line, spaces included.
        args: tuple[str, ...] = (rest,) if (sep and rest) else ()
        if len(args) < low:
            raise CommandError(f"{name} needs an argument")
        if name == "PASS" and not args:
            args = ("",)
        return Command(name, args)
    # RFC 1939: arguments are separated by a single space.  A trailing space
    # is tolerated (some clients send "STAT "), nothing else.
    rest = rest.rstrip(" ")
    args = tuple(rest.split(" ")) if rest else ()
    if "" in args:
        raise CommandError("arguments must be separated by single spaces")
    if len(args) < low:
        raise CommandError(f"{name} needs {low} argument{'s' if low > 1 else ''}")
    if high is not None and len(args) > high:
        raise CommandError(f"too many arguments for {name}")
    if name in _TAKES_MESSAGE_NUMBER and args:
        _decimal(args[0], "message number", positive=True)
    if name == "TOP":
        _decimal(args[1], "line count", positive=False)
    if name == "AUTH" and args:
        mech = args[0]
        if not mech.isascii() or not all(c.isalnum() or c in "-_" for c in mech) or len(mech) > 20:
            raise CommandError("invalid SASL mechanism name")
        args = (mech.upper(), *args[1:])
    return Command(name, args)
