"""CATENATE (RFC 4469): APPEND builds the message from pieces — ``TEXT``
literals the client sends and ``URL``\\ s naming messages (or parts of
them) already in the user's own folders — so that a client forwarding an
attachment or re-saving a draft does not download and upload it again::

    APPEND Drafts (\\Draft) CATENATE (URL "/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=HEADER"
                                     TEXT {42}
                                     ...
                                     URL "/INBOX/;UID=7/;SECTION=2")

It is an ``append_data`` form (:mod:`.append`): the parser keeps the pieces
and :class:`Catenation` resolves them when the command runs, after APPEND
has found the target folder (a missing one is still ``NO [TRYCREATE]``).
With MULTIAPPEND each message may be a catenation; all are stored or none.

URLs (RFC 5092) are the IMAP URLs of one message: the absolute
``imap://user@host/mailbox...`` form (for the logged-in user only),
``/mailbox[;UIDVALIDITY=n]/;UID=n[/;SECTION=s][/;PARTIAL=o[.l]]``, and
``;UID=n...`` relative to the selected folder.  A section is read as FETCH
``BODY[section]`` reads it (the ``HEADER`` includes its blank line).  A URL
that cannot be resolved — no such folder or message, a UIDVALIDITY that no
longer holds, a section the message does not have, URLAUTH, another
user's — fails the whole APPEND with ``NO [BADURL url]`` naming the first
such URL; a result over APPENDLIMIT is ``NO [TOOBIG]``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from .. import fetch as F
from .. import utf7
from ..backend import NoSuchFolder, StoreError
from ..reader import Fail, Reader
from .base import Refused, Registry, no
from .fetch import section as parse_section

if TYPE_CHECKING:
    from ..session import Session

NAME = "CATENATE"

_ABSOLUTE = re.compile(r"(?i)imap://(?:(?P<user>[^@/;]*)(?:;AUTH=[^@/]*)?@)?[^/]*(?P<path>/.*)$")
_PATH = re.compile(r"(?i)/(?P<mailbox>[^;]*)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]*))?(?P<rest>/;UID=.*)$")
_MESSAGE = re.compile(r"(?i)/?;UID=(?P<uid>[1-9][0-9]*)(?:/;SECTION=(?P<section>[^/;]*))?"
                      r"(?:/;PARTIAL=(?P<origin>[0-9]+)(?:\.(?P<length>[1-9][0-9]*))?)?$")


@dataclass(frozen=True)
class Ref:
    """One message, or a part of it, named by a URL."""

    mailbox: str | None  # None: the selected folder
    uidvalidity: int | None
    uid: int
    section: F.Section
    partial: tuple[int, int | None] | None


def parse_url(url: str, user: str) -> Ref | None:
    """The message part an IMAP URL names, or None when correo cannot
    resolve it here (another user's, URLAUTH, not a message URL)."""
    if not url or any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        return None
    m = _ABSOLUTE.match(url)
    if m:
        if m.group("user") is not None and m.group("user") != "":
            named = unquote_to_bytes(m.group("user")).decode("utf-8", "replace")
            if named.lower() != user.lower():
                return None
        url = m.group("path")
    mailbox = uidvalidity = None
    rest = url
    if url.startswith("/"):
        p = _PATH.match(url)
        if p is None:
            return None
        try:
            name = unquote_to_bytes(p.group("mailbox")).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not name:
            return None
        mailbox = "INBOX" if name.upper() == "INBOX" else utf7.encode(name)
        uidvalidity = int(p.group("uidvalidity")) if p.group("uidvalidity") else None
        rest = p.group("rest")
    msg = _MESSAGE.match(rest)
    if msg is None:
        return None
    section = F.Section()
    if msg.group("section"):
        spec = unquote_to_bytes(msg.group("section"))
        try:
            section = parse_section(Reader(b"[" + spec + b"]"))
        except Fail:
            return None
    partial = None
    if msg.group("origin") is not None:
        partial = (int(msg.group("origin")), int(msg.group("length")) if msg.group("length") else None)
    return Ref(mailbox, uidvalidity, int(msg.group("uid")), section, partial)


def _bad_url(url: str) -> Refused:
    shown = re.sub(r"[^\x21-\x5c\x5e-\x7e]", "", url)[:300] or "?"  # url-resp-text: no ']', no controls
    return Refused(no("Bad URL: it names no message part of yours that exists", f"BADURL {shown}"))


async def _part(s: "Session", url: str) -> bytes:
    ref = parse_url(url, s.mailbox.address)
    if ref is None:
        raise _bad_url(url)
    try:
        if ref.mailbox is None:
            if not hasattr(s.state, "view"):
                raise _bad_url(url)
            folder = s.view.folder
        else:
            folder = await s.mailbox.folder(ref.mailbox)
        if ref.uidvalidity is not None and ref.uidvalidity != folder.uidvalidity:
            raise _bad_url(url)
        msg = folder.get(ref.uid)
        if msg is None:
            raise _bad_url(url)
        data = F.section_bytes(await s.load(folder, msg), ref.section)
    except (NoSuchFolder, StoreError):
        raise _bad_url(url) from None
    if data is None:
        raise _bad_url(url)
    if ref.partial is not None:
        origin, length = ref.partial
        data = data[origin:] if length is None else data[origin:origin + length]
    return data


@dataclass(frozen=True)
class Catenation:
    """The pieces of one message: ``bytes`` sent as TEXT, ``str`` URLs."""

    parts: tuple[bytes | str, ...]

    async def resolve(self, s: "Session") -> bytes:
        out = bytearray()
        for part in self.parts:
            out += part if isinstance(part, bytes) else await _part(s, part)
            if len(out) > s.max_literal:
                raise Refused(no(f"Message too large (the limit is {s.max_literal} octets)", "TOOBIG"))
        return bytes(out)


def _catenate(r: Reader) -> Catenation | None:
    """``CATENATE (cat-part *(SP cat-part))``, cat-part = ``TEXT literal`` / ``URL astring``."""
    if not r.take(b"CATENATE"):
        return None
    r.sp()
    parts: list[bytes | str] = []

    def part() -> bytes | str:
        if r.take(b"TEXT"):
            r.sp()
            if r.peek() != b"{":
                r.expected("a literal after TEXT")
            return r.literal()
        if r.take(b"URL"):
            r.sp()
            return r.astring("an IMAP URL").decode("utf-8", "replace")
        r.expected("TEXT or URL")
        raise AssertionError

    parts = r.paren_list(part, allow_empty=False, what="the parts to catenate: (TEXT {n} ... URL \"...\")")
    return Catenation(tuple(parts))


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.append_data.append(_catenate)
