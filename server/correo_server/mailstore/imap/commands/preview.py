"""PREVIEW (RFC 8970): ``FETCH n (PREVIEW)`` — the first words of a
message's text, for the line under the subject in a message list, without
the client downloading the body.

The preview is at most 256 characters of the message's first text part
that is not an attachment (``text/plain``; else ``text/html`` with its
tags, styles and scripts left out and entities decoded), with quoted lines
(``>``) and the signature (after ``-- ``) left out and every run of white
space made one space.  A message with no such text (an attachment alone,
``multipart/encrypted``) has the empty preview ``""``.  It is sent as a
quoted string, or a literal when it has 8-bit characters (UTF-8).

It is made once per message, off the event loop (the folder's
``map_messages``), and kept in the folder's index (``message_data``
"preview"), so a list view fetching previews for a page of messages reads
the index afterwards.  ``PREVIEW (LAZY)`` is accepted; since a preview is
made when asked, it is answered like ``PREVIEW``.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from .. import fetch as F
from .. import responses as R
from ...message import Entity, parse
from ..reader import Reader
from ..search import _decode_body
from .base import Registry

if TYPE_CHECKING:
    from ..session import Session

NAME = "PREVIEW"
KIND = "preview"
MAX_CHARS = 256
_SPACE = re.compile(r"\s+")


class _Text(HTMLParser):
    """The text of an HTML part: no tags, no style or script contents."""

    SKIP = {"style", "script", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in ("br", "p", "div", "li", "tr", "blockquote"):
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(data)


def _html_text(source: str) -> str:
    p = _Text()
    try:
        p.feed(source)
        p.close()
    except Exception:  # a broken document: what was read so far
        pass
    return html.unescape("".join(p.out))


def _first_text(top: Entity) -> Entity | None:
    """The first text/plain leaf that is not an attachment; else the first text/html."""
    html_part = None
    stack = [top]
    while stack:
        e = stack.pop(0)
        if e.is_multipart:
            if e.subtype == "encrypted":
                continue
            stack = list(e.children) + stack
            continue
        if e.maintype != "text":
            continue
        disposition = (e.header("Content-Disposition") or b"").split(b";")[0].strip().lower()
        if disposition == b"attachment":
            continue
        if e.subtype == "plain":
            return e
        if e.subtype == "html" and html_part is None:
            html_part = e
    return html_part


def make_preview(content: bytes) -> bytes:
    """The preview of a message (UTF-8, at most :data:`MAX_CHARS` characters)."""
    part = _first_text(parse(content))
    if part is None:
        return b""
    text = _decode_body(part)
    if part.subtype == "html":
        text = _html_text(text)
    kept = []
    for line in text.splitlines():
        if line.rstrip() == "--":  # the signature separator ("-- ")
            break
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return _SPACE.sub(" ", " ".join(kept)).strip()[:MAX_CHARS].encode("utf-8")


class Preview(F.FetchItem):
    key = "PREVIEW"

    def __init__(self) -> None:
        self.previews: dict[int, bytes] = {}

    async def preload(self, session: "Session", uids: list[int]) -> None:
        folder = session.view.folder
        self.previews = await folder.message_data_for(KIND, uids)
        missing = [u for u in uids if u not in self.previews]
        if missing:
            made = await folder.map_messages(missing, make_preview)
            if made:
                await folder.put_message_data(KIND, made)
                self.previews.update(made)

    def render(self, f: F.Fetched) -> bytes:
        value = self.previews.get(f.msg.uid, b"")
        return b"PREVIEW " + (R.quoted(value) if value.isascii() and b"\r" not in value else R.literal(value))


def _parse(r: Reader, name: str) -> F.FetchItem:
    if r.peek(2) == b" (":  # PREVIEW (LAZY): the modifiers (RFC 8970 4)
        start = r.pos
        r.pos += 1
        r.open(b"(", ")", "the PREVIEW modifiers")
        while True:
            mod = r.atom("a PREVIEW modifier")
            if mod.upper() != "LAZY":
                r.fail(f"Unknown PREVIEW modifier {mod[:30]}")
            if r.take(b")"):
                r.closers.pop()
                break
            if not r.take(b" "):
                r.pos = start
                r.expected("LAZY or ')'")
    return Preview()


def register(registry: Registry) -> None:
    registry.capability(NAME)
    registry.fetch_item(NAME, _parse)
