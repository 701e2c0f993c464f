"""A message's MIME structure with byte offsets: what IMAP's FETCH needs.

Python's ``email`` package rebuilds messages rather than pointing into them,
so it cannot give IMAP the exact bytes of ``BODY[1.2.MIME]`` or a part's
octet count.  :func:`parse` walks the bytes once and records, for every MIME
entity, where its header and body start and end, its Content-* fields, its
children (multipart) or the message it encapsulates (``message/rfc822``).
Nothing is copied or re-encoded: every section is a slice of the stored file.

Used by :mod:`.imap.fetch` (sections), :mod:`.imap.bodystructure` and
:mod:`.imap.envelope`, and for text decoding by :mod:`.imap.search`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_DEPTH = 30  # deeper nesting is treated as an opaque leaf
MAX_PARTS = 2000

_LINE_END = re.compile(rb"\r?\n")


@dataclass
class Entity:
    data: bytes  # the whole message (all entities share it)
    start: int  # first byte of the header
    body_start: int  # first byte after the blank line ending the header
    end: int  # one past the last byte of the body
    headers: list[tuple[str, bytes]]  # (name as written, raw value with folding)
    header_raw_end: int  # end of the header fields (before the blank line)
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    children: list["Entity"] = field(default_factory=list)
    message: "Entity | None" = None  # the encapsulated message of message/rfc822
    explicit_type: bool = False

    # -- byte ranges ------------------------------------------------------------
    @property
    def header_bytes(self) -> bytes:
        """The header including the blank line that ends it (BODY[HEADER])."""
        return self.data[self.start:self.body_start]

    @property
    def body_bytes(self) -> bytes:
        return self.data[self.body_start:self.end]

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    @property
    def whole(self) -> bytes:
        return self.data[self.start:self.end]

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart" and bool(self.children)

    # -- header access ------------------------------------------------------------
    def header(self, name: str) -> bytes | None:
        """The first value of a field, unfolded (CRLF before whitespace removed)."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return unfold(value)
        return None

    def header_all(self, name: str) -> list[bytes]:
        lname = name.lower()
        return [unfold(v) for k, v in self.headers if k.lower() == lname]

    def param(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return value
        return None

    def header_fields(self, names: list[str], *, exclude: bool = False) -> bytes:
        """BODY[HEADER.FIELDS (...)] / HEADER.FIELDS.NOT: the matching field
        lines exactly as stored, in order, then the blank line."""
        wanted = {n.lower() for n in names}
        out = []
        for key, value in self.headers:
            if (key.lower() in wanted) != exclude:
                out.append(key.encode("latin-1", "replace") + b":" + value)
        out.append(b"\r\n")
        return b"".join(out)

    def lines(self) -> int:
        """Number of lines in the body (BODYSTRUCTURE's body-fld-lines)."""
        body = self.body_bytes
        if not body:
            return 0
        n = body.count(b"\n")
        if not body.endswith(b"\n"):
            n += 1
        return n


def unfold(value: bytes) -> bytes:
    """Remove the line breaks of folded header lines (RFC 5322 2.2.3) and the
    final one; leading whitespace of the value is dropped."""
    value = re.sub(rb"\r?\n(?=[ \t])", b"", value)
    return value.rstrip(b"\r\n").strip(b" \t")


def _split_header(data: bytes, start: int, end: int) -> tuple[list[tuple[str, bytes]], int, int]:
    """Parse the header fields from ``start``; returns (fields, end of the fields,
    start of the body)."""
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return [], start, start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return [], start, start + 1
    fields: list[tuple[str, bytes]] = []
    pos = start
    current: list = []  # [name, value_start]
    fields_end = end
    body_start = end
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = data[pos:line_end]
        if line in (b"\r\n", b"\n"):
            fields_end, body_start = pos, line_end
            break
        if line[:1] in (b" ", b"\t") and current:
            pass  # continuation of the current field
        else:
            if current:
                fields.append((current[0], data[current[1]:pos]))
                current = []
            colon = line.find(b":")
            if colon > 0 and not re.search(rb"[\x00-\x20\x7f]", line[:colon].rstrip(b" \t")):
                name = line[:colon].rstrip(b" \t").decode("latin-1")
                current = [name, pos + colon + 1]
            # else: a malformed line; kept in the header bytes, not as a field
        pos = line_end
    else:
        fields_end = body_start = end
    if current:
        fields.append((current[0], data[current[1]:fields_end]))
    return fields, fields_end, body_start


_TOKEN = rb"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+"


def parse_params(value: bytes) -> tuple[str, list[tuple[str, str]]]:
    """``text/plain; charset="utf-8"; format=flowed`` → ("text/plain",
    [("charset", "utf-8"), ("format", "flowed")]); comments are dropped.
    Parameter names keep their spelling; values keep theirs (RFC 2231
    encodings are not decoded, as IMAP shows them raw)."""
    text = _strip_comments(value)
    head, _, rest = text.partition(b";")
    params: list[tuple[str, str]] = []
    pos = 0
    rest_len = len(rest)
    while pos < rest_len:
        m = re.compile(rb"\s*(" + _TOKEN + rb")\s*=\s*").match(rest, pos)
        if not m:
            nxt = rest.find(b";", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        name = m.group(1).decode("latin-1")
        pos = m.end()
        if rest[pos:pos + 1] == b'"':
            out = bytearray()
            pos += 1
            while pos < rest_len and rest[pos:pos + 1] != b'"':
                if rest[pos:pos + 1] == b"\\" and pos + 1 < rest_len:
                    pos += 1
                out += rest[pos:pos + 1]
                pos += 1
            pos += 1
            val = bytes(out)
        else:
            m2 = re.compile(rb"[^;]*").match(rest, pos)
            val = m2.group(0).strip()
            pos = m2.end()
        params.append((name, val.decode("utf-8", "replace")))
        nxt = rest.find(b";", pos)
        if nxt < 0:
            break
        pos = nxt + 1
    return head.strip().decode("latin-1", "replace"), params


def _strip_comments(value: bytes) -> bytes:
    if b"(" not in value:
        return value
    out = bytearray()
    depth = 0
    quoted = False
    i = 0
    while i < len(value):
        c = value[i:i + 1]
        if quoted:
            out += c
            if c == b"\\" and i + 1 < len(value):
                out += value[i + 1:i + 2]
                i += 1
            elif c == b'"':
                quoted = False
        elif depth:
            if c == b"\\":
                i += 1
            elif c == b"(":
                depth += 1
            elif c == b")":
                depth -= 1
        elif c == b'"':
            quoted = True
            out += c
        elif c == b"(":
            depth = 1
        else:
            out += c
        i += 1
    return bytes(out)


def parse(data: bytes) -> Entity:
    """The structure of a whole message."""
    counter = [0]
    return _parse_entity(data, 0, len(data), default=("text", "plain"), depth=0, counter=counter)


def _parse_entity(data: bytes, start: int, end: int, *, default: tuple[str, str], depth: int,
                  counter: list[int]) -> Entity:
    counter[0] += 1
    headers, fields_end, body_start = _split_header(data, start, end)
    ent = Entity(data, start, body_start, end, headers, fields_end)
    ctype = ent.header("Content-Type")
    maintype, subtype = default
    if ctype is not None:
        full, params = parse_params(ctype)
        if "/" in full:
            mt, _, st = full.partition("/")
            mt, st = mt.strip().lower(), st.strip().lower()
            if mt and st and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9a-z]+", mt + st):
                maintype, subtype = mt, st
                ent.explicit_type = True
                ent.params = params
    ent.maintype, ent.subtype = maintype, subtype
    if not ent.explicit_type and (maintype, subtype) == ("text", "plain"):
        ent.params = [("charset", "us-ascii")]
    if depth >= MAX_DEPTH or counter[0] > MAX_PARTS:
        return ent
    if maintype == "multipart":
        boundary = ent.param("boundary")
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            for s, e in _split_multipart(data, body_start, end, boundary.encode("latin-1", "replace")):
                ent.children.append(_parse_entity(data, s, e, default=child_default, depth=depth + 1,
                                                  counter=counter))
        if not ent.children:
            # a multipart without parts is shown as an opaque text part
            pass
    elif (maintype, subtype) in (("message", "rfc822"), ("message", "global")):
        ent.message = _parse_entity(data, body_start, end, default=("text", "plain"), depth=depth + 1,
                                    counter=counter)
    return ent


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(start, end) of each body part between the delimiters.  The line break
    before a delimiter belongs to the delimiter (RFC 2046 5.1.1)."""
    delim = b"--" + boundary
    parts: list[tuple[int, int]] = []
    pos = start
    part_start: int | None = None
    while True:
        i = data.find(delim, pos, end)
        if i < 0:
            break
        at_line_start = i == start or data[i - 1:i] == b"\n"
        after = i + len(delim)
        nl = data.find(b"\n", after, end)
        line_end = end if nl < 0 else nl + 1
        tail = data[after:line_end].rstrip(b"\r\n")
        closing = tail.startswith(b"--")
        if not at_line_start or not (closing or tail.strip(b" \t") == b""):
            pos = after
            continue
        if part_start is not None:
            part_end = i  # the line break before the delimiter is the delimiter's
            if data[i - 2:i] == b"\r\n" and i - 2 >= part_start:
                part_end = i - 2
            elif data[i - 1:i] == b"\n" and i - 1 >= part_start:
                part_end = i - 1
            parts.append((part_start, part_end))
        if closing:
            part_start = None
            break
        part_start = line_end
        pos = line_end
    if part_start is not None and part_start <= end:
        parts.append((part_start, end))  # unterminated last part
    return parts


def find_part(top: Entity, path: list[int]) -> Entity | None:
    """The entity a section's part numbers name (RFC 3501 6.4.5), or None.

    Numbers index the parts of a multipart body; a single-part message has
    one part, ``1``, its body; after a ``message/rfc822`` part, numbers
    continue inside the encapsulated message."""
    node, msg_level = top, True
    for n in path:
        if not msg_level and node.message is not None:
            node, msg_level = node.message, True
        if node.is_multipart:
            if not 1 <= n <= len(node.children):
                return None
            node = node.children[n - 1]
        elif msg_level and n == 1:
            pass
        else:
            return None
        msg_level = False
    return node
