"""Parsing what follows ``MAIL FROM:`` and ``RCPT TO:`` (RFC 5321 section 4.1.2,
with the UTF-8 extensions of RFC 6531), into values the policy can judge.

Used by the relay (:mod:`correo_server.relay.smtp`, whose policy judges the
parsed :class:`Mailbox`) and by the LMTP servers (:mod:`.server`, which take
the address as the client wrote it, after the same syntax check).

A path keeps what matters for the open-relay rules: a source route
(``<@hop:user@domain>``), whether the local part was quoted
(``<"user@foreign"@local>``), and the local part's exact value, so that
``user%foreign@local`` and ``foreign!user@local`` are recognised by
:mod:`.policy` rather than passed on.  Parsing errors raise
:class:`PathError` carrying the reply to send.  Nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .replies import Reply

MAX_LOCAL_PART = 64  # RFC 5321 section 4.5.3.1.1
MAX_DOMAIN = 255  # section 4.5.3.1.2
MAX_PATH = 256  # section 4.5.3.1.3

# atext (RFC 5322 3.2.3), plus any non-ASCII character (RFC 6531 3.3)
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*\Z")
_LABEL = re.compile(r"(?:[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\-\u0080-\U0010ffff]*[A-Za-z0-9\u0080-\U0010ffff])?)\Z")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # in an address: refused
_BAD_VALUE = re.compile("[=\x00-\x20\x7f]")  # in a parameter's value: refused (RFC 5321 esmtp-value)


class PathError(ValueError):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _bad(text: str, status: str = "5.1.3", code: int = 501, reason: str = "bad_address") -> PathError:
    return PathError(Reply(code, status, text, reason))


@dataclass(frozen=True)
class Mailbox:
    """One mailbox from an SMTP path."""

    local: str  # the local part's value (unquoted, quoted-pairs resolved)
    domain: str  # lower-case, without a trailing dot; "" for <postmaster>
    quoted: bool = False  # the local part was a quoted string
    route: tuple[str, ...] = ()  # source route hops (obsolete; never relayed)
    literal: bool = False  # the domain is an address literal, e.g. [192.0.2.1]

    @property
    def address(self) -> str:
        """The RFC 5321 form, re-quoted where needed (``"a b"@example.com``)."""
        local = self.local
        if not _DOT_STRING.match(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def is_ascii(self) -> bool:
        return self.address.isascii()

    def __str__(self) -> str:
        return self.address


def split_keyword(arg: str | None, keyword: str) -> str | None:
    """``FROM:<a@b> SIZE=10`` → ``<a@b> SIZE=10`` (case-insensitive, spaces
    after the colon tolerated, as most servers do); None when the keyword is
    missing."""
    if not arg:
        return None
    if arg[: len(keyword)].upper() != keyword.upper():
        return None
    return arg[len(keyword):].lstrip(" ")


def _parse_domain(text: str) -> tuple[str, bool]:
    """A domain or an address literal → (lower-case form, is_literal)."""
    if text.startswith("["):
        if not text.endswith("]"):
            raise _bad("Bad address literal")
        inner = text[1:-1]
        try:
            if inner.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(inner[5:])
            else:
                ipaddress.IPv4Address(inner)
        except ValueError:
            raise _bad("Bad address literal") from None
        return text.lower(), True
    domain = text.rstrip(".") if text.endswith(".") and not text.endswith("..") else text
    if not domain or len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise _bad("Bad domain in address")
    labels = domain.split(".")
    if not all(len(label) <= 63 and _LABEL.match(label) for label in labels):
        raise _bad("Bad domain in address")
    return domain.lower(), False


def _parse_local(text: str) -> tuple[str, bool]:
    """A Dot-string or a Quoted-string → (value, was_quoted)."""
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise _bad("Bad local part in address")
        out = []
        i, body = 0, text[1:-1]
        while i < len(body):
            ch = body[i]
            if ch == "\\":
                if i + 1 >= len(body):
                    raise _bad("Bad local part in address")
                nxt = body[i + 1]
                if not (" " <= nxt <= "~"):
                    raise _bad("Bad local part in address")
                out.append(nxt)
                i += 2
                continue
            if ch == '"' or (ch < " " or ch == "\x7f"):
                raise _bad("Bad local part in address")
            out.append(ch)
            i += 1
        return "".join(out), True
    if not _DOT_STRING.match(text):
        raise _bad("Bad local part in address")
    return text, False


def _split_mailbox(text: str) -> tuple[str, str | None]:
    """Split ``local@domain`` at the ``@`` that is not inside the quoted local
    part; the domain is None when there is no ``@`` at all."""
    if text.startswith('"'):
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        else:
            raise _bad("Bad local part in address")
        local, rest = text[: i + 1], text[i + 1:]
        if not rest:
            return local, None
        if not rest.startswith("@"):
            raise _bad("Bad address syntax")
        return local, rest[1:]
    local, at, domain = text.partition("@")
    if at and "@" in domain:
        raise _bad("Bad address syntax")
    return local, domain if at else None


# The common shape, ``<dot-atom@domain>`` in ASCII, then blanks and parameters:
# recognised in one step, with the same result as the full parse below.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_SIMPLE_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(rf"<({_ATOM}+(?:\.{_ATOM}+)*@{_SIMPLE_LABEL}(?:\.{_SIMPLE_LABEL})*)>(?: +|\Z)")


def path_text(text: str, *, allow_null: bool) -> tuple[str, str]:
    """``<path> [params]`` → (the address as written, without the brackets;
    the parameter text), after the syntax check of :func:`parse_path` (which
    raises :class:`PathError`).  ``""`` is the null path."""
    m = _SIMPLE_PATH.match(text)
    if m is not None and len(m.group(1).partition("@")[0]) <= MAX_LOCAL_PART and len(m.group(1)) <= MAX_PATH:
        return m.group(1), text[m.end():]
    box, params = parse_path(text, allow_null=allow_null)
    if box is None:
        return "", params
    inner = text.strip(" ")
    if inner.startswith("<"):
        inner = inner[1:_closing_bracket(inner)]
    else:
        inner = inner.partition(" ")[0]
    if box.route:
        inner = inner.partition(":")[2]
    return inner, params


def parse_path(text: str, *, allow_null: bool) -> tuple[Mailbox | None, str]:
    """Parse ``<path> [params]`` → (mailbox or None for ``<>``, the parameter text).

    Angle brackets may be left out when the address has no spaces (an old
    habit some clients still have).  Raises :class:`PathError`.
    """
    text = text.strip(" ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the wire (surrogateescape)
        raise _bad("Address is not valid UTF-8", "5.6.7", 553) from None
    if _CONTROL.search(text):
        raise _bad("Control characters in address")
    if text.startswith("<"):
        end = _closing_bracket(text)
        inner, params = text[1:end], text[end + 1:]
        if params and not params.startswith(" "):
            raise _bad("Bad address syntax")
    else:
        inner, _, params = text.partition(" ")
    params = params.strip(" ")
    if inner == "":
        if not allow_null:
            raise _bad("Empty address not allowed here")
        return None, params
    if len(inner.encode("utf-8")) > MAX_PATH:
        raise _bad("Path too long")
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        hops, colon, inner = inner.partition(":")
        if not colon:
            raise _bad("Bad source route")
        parsed = []
        for hop in hops.split(","):
            if not hop.startswith("@"):
                raise _bad("Bad source route")
            parsed.append(_parse_domain(hop[1:])[0])
        route = tuple(parsed)
    local_text, domain_text = _split_mailbox(inner)
    if not local_text:
        raise _bad("Bad address syntax")
    local, quoted = _parse_local(local_text)
    if len(local_text.encode("utf-8")) > MAX_LOCAL_PART:
        raise _bad("Local part too long")
    if domain_text == "":
        raise _bad("Bad domain in address")
    domain, literal = ("", False) if domain_text is None else _parse_domain(domain_text)
    return Mailbox(local, domain, quoted, route, literal), params


def _closing_bracket(text: str) -> int:
    end = text.find(">", 1)
    if end > 0 and '"' not in text[1:end]:  # no quoted part before it: the usual address
        return end
    in_quote = False
    i = 1
    while i < len(text):
        ch = text[i]
        if in_quote and ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            return i
        i += 1
    raise _bad("Missing > in address")


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters (``SIZE=123 BODY=8BITMIME SMTPUTF8``) → {KEYWORD: value}.
    Keywords are upper-cased; values keep their case.  Raises :class:`PathError`."""
    out: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key) or (eq and not value):
            raise PathError(Reply(501, "5.5.4", f"Bad parameter syntax: {item[:40]}", "bad_parameter"))
        if _BAD_VALUE.search(value):
            raise PathError(Reply(501, "5.5.4", f"Bad parameter syntax: {item[:40]}", "bad_parameter"))
        key = key.upper()
        if key in out:
            raise PathError(Reply(501, "5.5.4", f"Parameter {key} given twice", "bad_parameter"))
        out[key] = value if eq else None
    return out
