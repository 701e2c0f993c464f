"""BINARY (RFC 3516): FETCH ``BINARY[part]<partial>``, ``BINARY.PEEK[...]``
and ``BINARY.SIZE[part]`` give a part's content with its
Content-Transfer-Encoding undone (base64 and quoted-printable decoded;
7bit, 8bit and binary as stored; anything else ``NO [UNKNOWN-CTE]``), sent
as a ``~{n}`` literal8 when it holds a NUL; and APPEND takes a literal8,
``~{n}``, whose binary parts are stored base64-encoded (so that BODY[]
never carries a NUL, RFC 3516 4.3) and come back decoded by BINARY[].

``BINARY[]`` is the whole message as stored; a ``message/rfc822`` or
multipart part is given as ``BODY[part]`` would give it.
"""
from __future__ import annotations

import base64
import binascii
import re

from ...message import Entity, find_part, parse
from .. import fetch as F
from ..reader import Reader
from .base import Refused, Registry, no
from .fetch import partial

_IDENTITY = {"", "7bit", "8bit", "binary"}
_B64_ALPHABET = re.compile(rb"[^A-Za-z0-9+/]")


class UnknownCte(Exception):
    pass


# ---------------------------------------------------------------------------
# Decoding (pure)
# ---------------------------------------------------------------------------

def _cte(ent: Entity) -> str:
    value = ent.header("Content-Transfer-Encoding")
    return value.decode("ascii", "replace").strip().lower() if value else ""


def decode_base64(data: bytes) -> bytes:
    """Lenient: characters outside the alphabet are skipped, the end padded."""
    clean = _B64_ALPHABET.sub(b"", data.split(b"=", 1)[0])
    clean = clean[:len(clean) - len(clean) % 4 if len(clean) % 4 == 1 else len(clean)]
    try:
        return base64.b64decode(clean + b"=" * (-len(clean) % 4))
    except (binascii.Error, ValueError):
        return b""


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_qp(data: bytes) -> bytes:
    """RFC 2045 6.7: trailing whitespace dropped, ``=`` at a line's end joins
    it to the next, ``=XX`` decoded; line ends kept as they are (CRLF)."""
    out = []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        had_cr = line.endswith(b"\r")
        line = line.rstrip(b"\r").rstrip(b" \t")
        if line.endswith(b"="):
            out.append(_QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), line[:-1]))
            continue
        out.append(_QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), line))
        if not last:
            out.append(b"\r\n" if had_cr else b"\n")
    return b"".join(out)


def binary_section(top: Entity, part: tuple[int, ...]) -> bytes | None:
    """The decoded content of ``BINARY[part]`` (None: no such part);
    :class:`UnknownCte` for an encoding that cannot be undone."""
    if not part:
        return top.data[top.start:top.end]
    node = find_part(top, list(part))
    if node is None:
        return None
    if node.is_multipart or node.message is not None:
        return node.body_bytes
    cte = _cte(node)
    if cte in _IDENTITY:
        return node.body_bytes
    if cte == "base64":
        return decode_base64(node.body_bytes)
    if cte == "quoted-printable":
        return decode_qp(node.body_bytes)
    raise UnknownCte(cte)


def literal8_or_literal(data: bytes) -> bytes:
    return (b"~{%d}\r\n" if b"\x00" in data else b"{%d}\r\n") % len(data) + data


# ---------------------------------------------------------------------------
# APPEND of a literal8: binary parts stored base64-encoded
# ---------------------------------------------------------------------------

_CTE_LINE = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n")


def _base64_lines(data: bytes) -> bytes:
    enc = base64.b64encode(data)
    return b"".join(enc[i:i + 76] + b"\r\n" for i in range(0, len(enc), 76))


def store_form(data: bytes) -> bytes:
    """The message to store for one APPENDed as literal8: every leaf part
    that holds a NUL or says ``binary`` is re-encoded base64 (header and
    body rewritten in place; everything else byte for byte)."""
    if b"\x00" not in data and b"binary" not in data.lower():
        return data
    top = parse(data)
    leaves: list[Entity] = []
    stack = [top]
    while stack:
        e = stack.pop()
        if e.is_multipart:
            stack.extend(e.children)
        elif e.message is not None:
            stack.append(e.message)
        elif _cte(e) == "binary" or (_cte(e) in _IDENTITY and b"\x00" in e.body_bytes):
            leaves.append(e)
    out = data
    for e in sorted(leaves, key=lambda e: e.start, reverse=True):
        fields = _CTE_LINE.sub(b"", data[e.start:e.header_raw_end])
        if fields and not fields.endswith(b"\n"):
            fields += b"\r\n"
        new_header = fields + b"Content-Transfer-Encoding: base64\r\n\r\n"
        out = out[:e.start] + new_header + _base64_lines(data[e.body_start:e.end]) + out[e.end:]
    return out


def _append_literal8(r: Reader) -> bytes | None:
    if r.peek() != b"~":
        return None
    r.pos += 1
    return store_form(r.literal())


# ---------------------------------------------------------------------------
# FETCH items
# ---------------------------------------------------------------------------

def _section(r: Reader) -> tuple[int, ...]:
    r.open(b"[", "]", "'['")
    part: list[int] = []
    while r.peek().isdigit():
        part.append(r.number(nonzero=True, what="a part number"))
        if not r.take(b"."):
            break
    r.close(b"]")
    return tuple(part)


def _spec(part: tuple[int, ...]) -> bytes:
    return ".".join(str(p) for p in part).encode()


def _decoded(f: F.Fetched, part: tuple[int, ...]) -> bytes | None:
    assert f.loaded is not None
    try:
        return binary_section(f.loaded.entity, part)
    except UnknownCte as exc:
        raise Refused(no(f"Unknown Content-Transfer-Encoding {str(exc)[:40]}", "UNKNOWN-CTE")) from None


class Binary(F.FetchItem):
    needs_data = True
    repeatable = True

    def __init__(self, part: tuple[int, ...], peek: bool, part_range: tuple[int, int] | None) -> None:
        self.part, self.peek, self.range = part, peek, part_range
        self.sets_seen = not peek
        self.key = "BINARY[" + _spec(part).decode() + "]"

    def render(self, f: F.Fetched) -> bytes:
        data = _decoded(f, self.part)
        key = b"BINARY[" + _spec(self.part) + b"]"
        if self.range is not None:
            origin, count = self.range
            key += b"<%d>" % origin
            if data is not None:
                data = data[origin:origin + count]
        return key + b" " + (b"NIL" if data is None else literal8_or_literal(data))


class BinarySize(F.FetchItem):
    needs_data = True
    repeatable = True

    def __init__(self, part: tuple[int, ...]) -> None:
        self.part = part
        self.key = "BINARY.SIZE[" + _spec(part).decode() + "]"

    def render(self, f: F.Fetched) -> bytes:
        data = _decoded(f, self.part)
        return b"BINARY.SIZE[" + _spec(self.part) + b"] %d" % (len(data) if data is not None else 0)


def _binary(r: Reader, name: str) -> F.FetchItem:
    if r.peek() != b"[":
        r.fail(f"{name} needs a section: {name}[] or {name}[1.2]")
    part = _section(r)
    if name == "BINARY.SIZE":
        return BinarySize(part)
    return Binary(part, name == "BINARY.PEEK", partial(r))


def register(registry: Registry) -> None:
    registry.capability("BINARY")
    for name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        registry.fetch_item(name, _binary)
    registry.append_data.append(_append_literal8)
