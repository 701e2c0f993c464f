"""Addresses in header fields and in the envelope, and their parts.

Pure.  :func:`parse_address_list` reads an RFC 5322 address-list (display
names, comments, quoted local parts, groups, obsolete source routes) and
returns the mailboxes it holds, which is what the ``address`` test matches
(RFC 5228 5.1: never the phrase, never a group name, but the addresses
inside a group).  :func:`address_part` picks ``:all``, ``:localpart``,
``:domain`` and the subaddress parts ``:user`` / ``:detail`` (RFC 5233).

An element that is not a valid address is kept as :class:`Address` with
``valid=False``: ``:all`` still sees its text, ``:localpart`` and
``:domain`` never match it (RFC 5228 2.7.4).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010FFFF]+")


@dataclass(frozen=True)
class Address:
    local: str  # unquoted local part
    domain: str
    valid: bool = True
    raw: str = ""  # the text as written, for an invalid element

    @property
    def all(self) -> str:
        if not self.valid:
            return self.raw
        return f"{self.local}@{self.domain}" if self.domain else self.local


def _skip_cfws(s: str, i: int) -> int:
    n = len(s)
    while i < n:
        ch = s[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":
            depth = 0
            while i < n:
                c = s[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


class _Reader:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def peek(self) -> str:
        self.i = _skip_cfws(self.s, self.i)
        return self.s[self.i] if self.i < len(self.s) else ""

    def word(self) -> str | None:
        """An atom or a quoted string (unquoted), or None."""
        ch = self.peek()
        if ch == '"':
            out = []
            i = self.i + 1
            while i < len(self.s):
                c = self.s[i]
                if c == "\\" and i + 1 < len(self.s):
                    out.append(self.s[i + 1])
                    i += 2
                    continue
                if c == '"':
                    self.i = i + 1
                    return "".join(out)
                if c not in "\r\n":
                    out.append(c)
                i += 1
            self.i = len(self.s)
            return "".join(out)
        m = _ATEXT.match(self.s, self.i)
        if m:
            self.i = m.end()
            return m.group(0)
        return None


def _addr_spec(r: _Reader, stop: str) -> Address | None:
    """local-part "@" domain, up to a character in ``stop``; None if malformed."""
    local_words = []
    w = r.word()
    if w is None:
        return None
    local_words.append(w)
    while r.peek() == ".":
        r.i += 1
        w = r.word()
        if w is None:
            return None
        local_words.append(w)
    if r.peek() != "@":
        return Address(".".join(local_words), "", valid=False, raw=".".join(local_words))
    r.i += 1
    if r.peek() == "[":
        end = r.s.find("]", r.i)
        if end < 0:
            return None
        domain = r.s[r.i:end + 1]
        r.i = end + 1
    else:
        parts = []
        w = r.word()
        if w is None:
            return None
        parts.append(w)
        while r.peek() == ".":
            r.i += 1
            w = r.word()
            if w is None:
                return None
            parts.append(w)
        domain = ".".join(parts)
    if r.peek() not in stop:
        return None
    return Address(".".join(local_words), domain)


def _skip_to(r: _Reader, chars: str) -> str:
    """Skip to the next top-level character in ``chars``; return the text skipped."""
    start = r.i
    s, n = r.s, len(r.s)
    i = r.i
    while i < n and s[i] not in chars:
        if s[i] == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            i = j + 1
        elif s[i] == "(":
            i = _skip_cfws(s, i)
        else:
            i += 1
    r.i = min(i, n)
    return s[start:r.i].strip()


def _mailbox(r: _Reader, stop: str) -> Address | None:
    """name-addr / addr-spec, ending before a character in ``stop``."""
    start = r.i
    if r.peek() == "<":
        return _angle(r, stop, start)
    spec = _addr_spec(r, stop + "<")
    if spec is not None and r.peek() != "<" and spec.valid:
        return spec
    # A display name (phrase) then <angle-addr>.
    r.i = start
    while True:
        ch = r.peek()
        if ch == "<":
            return _angle(r, stop, start)
        if not ch or ch in stop:
            break
        if r.word() is None:
            if ch == ".":  # obsolete phrase with dots
                r.i += 1
                continue
            break
    r.i = start
    raw = _skip_to(r, stop)
    return Address("", "", valid=False, raw=raw) if raw else None


def _angle(r: _Reader, stop: str, start: int) -> Address | None:
    r.i = _skip_cfws(r.s, r.i) + 1  # past "<"
    if r.peek() == "@":  # obsolete source route: drop it (RFC 5228 5.4)
        colon = r.s.find(":", r.i)
        close = r.s.find(">", r.i)
        if 0 <= colon < close:
            r.i = colon + 1
    if r.peek() == ">":  # <> : the null address
        r.i += 1
        return Address("", "", valid=True, raw="<>")
    spec = _addr_spec(r, ">")
    if spec is not None and r.peek() == ">":
        r.i += 1
        if r.peek() and r.peek() not in stop:
            r.i = start
            raw = _skip_to(r, stop)
            return Address("", "", valid=False, raw=raw)
        return spec
    r.i = start
    raw = _skip_to(r, stop)
    return Address("", "", valid=False, raw=raw)


def parse_address_list(text: str) -> list[Address]:
    """The mailboxes of an address-list header value (groups flattened)."""
    r = _Reader(text)
    out: list[Address] = []
    in_group = False
    while r.peek():
        ch = r.peek()
        if ch == ",":
            r.i += 1
            continue
        if in_group and ch == ";":
            r.i += 1
            in_group = False
            continue
        # A group "display-name:" before any address in it.
        start = r.i
        if not in_group:
            _skip_to(r, ":<@,;")
            if r.i < len(r.s) and r.s[r.i] == ":":
                r.i += 1
                in_group = True
                continue
            r.i = start
        stop = ",;" if in_group else ","
        item = _mailbox(r, stop)
        if item is not None:
            out.append(item)
        if r.i == start:  # no progress: skip a character
            r.i += 1
    return out


def parse_path(text: str) -> Address | None:
    """An envelope address (``user@domain``, with or without <>); None for the null path."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text.startswith("@") and ":" in text:  # source route
        text = text.split(":", 1)[1]
    if not text:
        return None
    local, sep, domain = text.rpartition("@")
    if not sep:
        return Address(text, "", valid=True)
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return Address(local, domain)


def split_detail(local: str, delimiter: str) -> tuple[str, str | None]:
    """(user, detail) of a local part; detail None when there is no separator.

    With several separators the first one splits (``a+b+c`` → ``a``, ``b+c``),
    as Dovecot and Postfix do.  ``delimiter`` may hold several characters, each
    a separator (Postfix's ``recipient_delimiter = +-``)."""
    if not delimiter:
        return local, None
    at = min((i for i in (local.find(d) for d in delimiter) if i >= 0), default=-1)
    if at < 0:
        return local, None
    return local[:at], local[at + 1:]


def address_part(addr: Address, part: str, delimiter: str = "+") -> str | None:
    """The string the test compares, or None when this address cannot match."""
    if part == "all":
        return addr.all
    if not addr.valid or addr.raw == "<>":
        return None
    if part == "localpart":
        return addr.local
    if part == "domain":
        return addr.domain if addr.domain else None
    user, detail = split_detail(addr.local, delimiter)
    if part == "user":
        return user
    if part == "detail":
        return detail
    raise ValueError(f"unknown address part {part}")
