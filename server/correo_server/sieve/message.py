"""The message as Sieve tests see it: header fields, addresses, body parts.

Pure, over the message's bytes as delivered.  :class:`MessageView` parses
lazily what a script asks for and caches it, so a script that only looks at
``Subject`` never walks the MIME tree.

* Header values are unfolded, stripped of leading and trailing white space,
  and RFC 2047 encoded words are decoded to Unicode (RFC 5228 2.4.2.2 and
  2.7.2); raw UTF-8 (RFC 6532) is read as such, other 8-bit text as Latin-1.
* The body (RFC 5173) is split into MIME parts (:class:`Part`): multipart
  preambles and epilogues are kept apart, ``message/rfc822`` parts give their
  nested header, transfer encodings (base64, quoted-printable) are removed
  and text is converted from its charset.  Depth and the number of parts are
  bounded, so a hostile message cannot make the walk expensive.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass, field
from functools import cached_property

from .addresses import Address, parse_address_list

MAX_MIME_DEPTH = 16
MAX_MIME_PARTS = 500

_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"\?=[ \t\r\n]+=\?")


def raw_text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _charset_decode(raw: bytes, charset: str) -> str:
    charset = charset.strip().strip('"').split("*", 1)[0] or "us-ascii"
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return raw_text(raw)
    if codec.name in ("ascii", "us-ascii"):
        return raw_text(raw)  # common mislabel: 8-bit text marked us-ascii
    return raw.decode(codec.name, "replace")


def _decode_word(charset: bytes, enc: bytes, payload: bytes) -> str | None:
    try:
        if enc in (b"B", b"b"):
            data = base64.b64decode(payload + b"=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.replace(b"_", b" "), header=True)
    except (binascii.Error, ValueError):
        return None
    return _charset_decode(data, charset.decode("ascii", "replace"))


def decode_header_value(raw: bytes) -> str:
    """RFC 2047 encoded words → text (white space between adjacent words dropped)."""
    if b"=?" not in raw:
        return raw_text(raw)
    raw = _BETWEEN_WORDS.sub(b"?==?", raw)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD.finditer(raw):
        decoded = _decode_word(m.group(1), m.group(2), m.group(3))
        if decoded is None:
            continue
        out.append(raw_text(raw[pos:m.start()]))
        out.append(decoded)
        pos = m.end()
    out.append(raw_text(raw[pos:]))
    return "".join(out)


def unfold(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"").replace(b"\n", b"").strip(b" \t")


def split_header(data: bytes) -> tuple[bytes, bytes | None]:
    """(header section, body) at the first empty line; body None when there is none."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf + 2], data[crlf + 4:]
    if lf >= 0:
        return data[:lf + 1], data[lf + 2:]
    return data, None


_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def parse_fields(header: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, raw folded value) in order; lines that are not fields are skipped."""
    fields: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n(?![ \t])", header):
        if not line.strip():
            continue
        m = _FIELD_NAME.match(line)
        if not m:
            continue
        fields.append((m.group(1).decode("ascii").lower(), line[m.end():]))
    return fields


def _params(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` → (lower type, params with lower keys)."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and quoted and i + 1 < len(value):
            cur.append(value[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    main = re.sub(r"\([^)]*\)", "", items[0]).strip().lower()
    params: dict[str, str] = {}
    for item in items[1:]:
        key, sep, val = item.partition("=")
        if sep:
            params.setdefault(key.strip().lower(), val.strip())
    return main, params


@dataclass
class Part:
    """One MIME entity."""

    fields: list[tuple[str, bytes]]
    header: bytes
    body: bytes
    content_type: str = "text/plain"  # lower case "type/subtype"
    params: dict[str, str] = field(default_factory=dict)
    children: list["Part"] = field(default_factory=list)
    preamble: bytes | None = None
    epilogue: bytes | None = None
    message: "Part | None" = None  # the nested message of message/rfc822

    def field(self, name: str) -> str | None:
        for n, v in self.fields:
            if n == name:
                return decode_header_value(unfold(v))
        return None

    @property
    def main_type(self) -> str:
        return self.content_type.split("/", 1)[0]

    def decoded(self) -> bytes:
        cte = (self.field("content-transfer-encoding") or "").strip().lower()
        if cte == "base64":
            cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", self.body)
            cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
            try:
                return base64.b64decode(cleaned)
            except (binascii.Error, ValueError):
                return self.body
        if cte == "quoted-printable":
            return binascii.a2b_qp(self.body)
        return self.body

    def text(self) -> str:
        """The content as text: decoded, from its charset for text/*."""
        data = self.decoded()
        if self.main_type == "text":
            return _charset_decode(data, self.params.get("charset", "us-ascii"))
        return data.decode("utf-8", "replace")


class _Budget:
    def __init__(self) -> None:
        self.parts = 0


def parse_part(data: bytes, default_type: str = "text/plain", depth: int = 0,
               budget: _Budget | None = None) -> Part:
    budget = budget or _Budget()
    budget.parts += 1
    header, body = split_header(data)
    fields = parse_fields(header)
    ctype_value = next((decode_header_value(unfold(v)) for n, v in fields if n == "content-type"), None)
    ctype, params = _params(ctype_value) if ctype_value else (default_type, {})
    if "/" not in ctype:
        ctype, params = default_type, {}
    part = Part(fields, header, body or b"", ctype, params)
    if depth >= MAX_MIME_DEPTH or budget.parts >= MAX_MIME_PARTS or body is None:
        return part
    if part.main_type == "multipart" and params.get("boundary"):
        _split_multipart(part, params["boundary"].strip('"'), depth, budget)
    elif ctype == "message/rfc822":
        part.message = parse_part(part.decoded(), "text/plain", depth + 1, budget)
    return part


def _split_multipart(part: Part, boundary: str, depth: int, budget: _Budget) -> None:
    body = part.body
    delim = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode("utf-8", "replace"))
                       + rb"(--)?[ \t]*(?=\r?\n|$)")
    matches = list(delim.finditer(body))
    if not matches:
        return
    part.preamble = body[:matches[0].start()]
    child_type = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
    for m, nxt in zip(matches, matches[1:] + [None]):
        if m.group(1):  # the close delimiter
            rest = body[m.end():]
            part.epilogue = rest[2:] if rest.startswith(b"\r\n") else rest[1:] if rest.startswith(b"\n") else rest
            return
        start = m.end()
        if body.startswith(b"\r\n", start):
            start += 2
        elif body.startswith(b"\n", start):
            start += 1
        end = nxt.start() if nxt is not None else len(body)
        if budget.parts >= MAX_MIME_PARTS:
            return
        part.children.append(parse_part(body[start:end], child_type, depth + 1, budget))


_TAG = re.compile(r"<[^>]*>")
_SCRIPT_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def html_to_text(html: str) -> str:
    import html as htmlmod
    text = _SCRIPT_STYLE.sub(" ", html)
    text = re.sub(r"<br\s*/?>|</p\s*>|</div\s*>", "\n", text, flags=re.IGNORECASE)
    return htmlmod.unescape(_TAG.sub("", text))


class MessageView:
    """A delivered message, read on demand."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self._header, self._body = split_header(data)

    @cached_property
    def fields(self) -> list[tuple[str, bytes]]:
        return parse_fields(self._header)

    @property
    def has_body(self) -> bool:
        return self._body is not None

    @property
    def raw_body(self) -> bytes | None:
        return self._body

    def raw_values(self, name: str) -> list[bytes]:
        name = name.lower()
        return [v for n, v in self.fields if n == name]

    def exists(self, name: str) -> bool:
        name = name.lower()
        return any(n == name for n, _ in self.fields)

    def values(self, name: str) -> list[str]:
        """Every field called ``name``: unfolded, stripped, decoded."""
        return [decode_header_value(unfold(v)) for v in self.raw_values(name)]

    def first(self, name: str) -> str | None:
        vals = self.raw_values(name)
        return decode_header_value(unfold(vals[0])) if vals else None

    def addresses(self, name: str) -> list[list[Address]]:
        """For each field called ``name``, the addresses it holds."""
        return [parse_address_list(raw_text(unfold(v))) for v in self.raw_values(name)]

    @cached_property
    def root(self) -> Part:
        return parse_part(self.data)

    def walk(self) -> list[Part]:
        """Every part, depth first (the root first; nested messages included)."""
        out: list[Part] = []
        stack = [self.root]
        while stack:
            p = stack.pop()
            out.append(p)
            nested = ([p.message] if p.message is not None else []) + p.children
            stack.extend(reversed(nested))
        return out
