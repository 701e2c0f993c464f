"""FETCH ENVELOPE (RFC 3501 section 7.4.2) from a parsed message header.

Header values go out raw (unfolded, encoded-words left as they are, as
Dovecot does); address lists are parsed with RFC 5322's grammar leniently:
display names (quoted or not), angle addresses with source routes, groups
(``undisclosed-recipients:;``, ``group: a@b, c@d;``) as RFC 3501's start
marker ``(NIL NIL "group" NIL)`` and end marker ``(NIL NIL NIL NIL)`` around
their members (an entry that is only a comment is no member), comments as
the name when there is no other.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..message import Entity
from .responses import NIL, nstring


@dataclass(frozen=True)
class Address:
    name: bytes | None
    adl: bytes | None
    mailbox: bytes | None
    host: bytes | None

    def encode(self) -> bytes:
        return b"(" + b" ".join(nstring(v) for v in (self.name, self.adl, self.mailbox, self.host)) + b")"


# -- tokenizing -------------------------------------------------------------------

def _tokens(value: bytes) -> list[tuple[str, bytes]]:
    """(kind, text): kinds are 'q' quoted string (unescaped), 'c' comment,
    'a' atom-ish run, and single specials '<' '>' '@' ',' ':' ';'."""
    out: list[tuple[str, bytes]] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i:i + 1]
        if c in b" \t\r\n":
            i += 1
        elif c == b'"':
            i += 1
            buf = bytearray()
            while i < n and value[i:i + 1] != b'"':
                if value[i:i + 1] == b"\\" and i + 1 < n:
                    i += 1
                buf += value[i:i + 1]
                i += 1
            i += 1
            out.append(("q", bytes(buf)))
        elif c == b"(":
            depth, i, buf = 1, i + 1, bytearray()
            while i < n and depth:
                ch = value[i:i + 1]
                if ch == b"\\" and i + 1 < n:
                    buf += value[i + 1:i + 2]
                    i += 2
                    continue
                if ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                    if not depth:
                        i += 1
                        break
                buf += ch
                i += 1
            out.append(("c", bytes(buf).strip()))
        elif c in b"<>@,:;":
            out.append((c.decode(), c))
            i += 1
        else:
            j = i
            while j < n and value[j:j + 1] not in b' \t\r\n"(<>@,:;':
                j += 1
            out.append(("a", value[i:j]))
            i = j
    return out


def _words(tokens: list[tuple[str, bytes]]) -> bytes | None:
    parts = [t for k, t in tokens if k in ("a", "q")]
    return b" ".join(parts) if parts else None


def _mailbox(tokens: list[tuple[str, bytes]]) -> Address | None:
    """One mailbox from its tokens (no top-level commas inside)."""
    if not tokens:
        return None
    kinds = [k for k, _ in tokens]
    if "<" in kinds:
        lt = kinds.index("<")
        gt = kinds.index(">", lt) if ">" in kinds[lt:] else len(tokens)
        name = _words(tokens[:lt])
        if name is None:
            comments = [t for k, t in tokens[:lt] + tokens[gt + 1:] if k == "c"]
            name = comments[0] if comments else None
        inner = tokens[lt + 1:gt]
        adl = None
        ik = [k for k, _ in inner]
        if ":" in ik and inner and inner[0][0] == "@":
            colon = ik.index(":")
            adl = b"".join(t for _, t in inner[:colon])
            inner = inner[colon + 1:]
        local, host = _addr_spec(inner)
        return Address(name, adl, local, host)
    local, host = _addr_spec(tokens)
    comments = [t for k, t in tokens if k == "c"]
    return Address(comments[0] if comments else None, None, local, host)


def _addr_spec(tokens: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    tokens = [(k, t) for k, t in tokens if k != "c"]
    kinds = [k for k, _ in tokens]
    if "@" in kinds:
        at = len(kinds) - 1 - kinds[::-1].index("@")
        local = b"".join(t if k != "q" else t for k, t in tokens[:at])
        host = b"".join(t for _, t in tokens[at + 1:])
    else:
        local = b"".join(t for _, t in tokens)
        host = b""
    return (local or b"MISSING_MAILBOX"), (host or b"MISSING_DOMAIN")


def parse_addresses(value: bytes | None) -> list[Address] | None:
    """An address-list header → envelope addresses (groups as start/end
    markers); None when empty."""
    if value is None:
        return None
    tokens = _tokens(value)
    out: list[Address] = []
    current: list[tuple[str, bytes]] = []
    in_group = False
    angle = 0

    def flush():
        nonlocal current
        # only comments and spaces (``group: (foo) ;``, ``a, , b``): no address at all
        if any(k != "c" for k, _ in current):
            addr = _mailbox(current)
            if addr is not None:
                out.append(addr)
        current = []

    for kind, text in tokens:
        if kind == "<":
            angle += 1
        elif kind == ">":
            angle = max(0, angle - 1)
        if angle == 0 and kind == ":" and not in_group and not any(k in ("<", "@") for k, _ in current):
            out.append(Address(None, None, _words(current) or b"", None))
            current = []
            in_group = True
            continue
        if angle == 0 and kind == ";" and in_group:
            flush()
            out.append(Address(None, None, None, None))
            in_group = False
            continue
        if angle == 0 and kind == ",":
            flush()
            continue
        current.append((kind, text))
    flush()
    if in_group:
        out.append(Address(None, None, None, None))
    return out or None


def _address_list(value: bytes | None) -> bytes:
    addrs = parse_addresses(value)
    if not addrs:
        return NIL
    return b"(" + b"".join(a.encode() for a in addrs) + b")"


def envelope(entity: Entity) -> bytes:
    """The ENVELOPE structure of a message (top level or encapsulated)."""
    h = entity.header
    from_ = h("From")
    sender = h("Sender")
    reply_to = h("Reply-To")
    from_list = _address_list(from_)
    sender_list = _address_list(sender) if sender and sender.strip() else from_list
    reply_list = _address_list(reply_to) if reply_to and reply_to.strip() else from_list
    if sender_list == NIL:
        sender_list = from_list
    if reply_list == NIL:
        reply_list = from_list
    fields = [
        nstring(h("Date")),
        nstring(h("Subject")),
        from_list,
        sender_list,
        reply_list,
        _address_list(h("To")),
        _address_list(h("Cc")),
        _address_list(h("Bcc")),
        nstring(h("In-Reply-To")),
        nstring(h("Message-ID")),
    ]
    return b"(" + b" ".join(fields) + b")"
