"""What SORT, THREAD and OBJECTID need of a message, taken once from its
header: a :class:`Summary` (pure functions, no I/O).

- **Base subject** (RFC 5256 section 2.1): encoded-words decoded,
  whitespace collapsed, then ``Re:``/``Fw:``/``Fwd:`` leaders (with
  ``[blob]`` prefixes), ``(fwd)`` trailers and ``[fwd: ...]`` wrappers
  removed until none is left.  Whether any such text was removed says the
  message is a reply or forward (THREAD's subject merging).
- **Collation**: every comparison of text uses ``i;unicode-casemap``
  (RFC 5051: titlecase, then compatibility decomposition), which for
  US-ASCII is ``i;ascii-casemap`` (RFC 4790: a-z as A-Z), the comparator
  RFC 5256 names — so ``_`` sorts after letters, as in Dovecot.
- **Sent date** (RFC 5256 2.2): the ``Date:`` field in UTC; None when
  missing or unparsable (the caller falls back to the internal date).
- **Addresses**: the ``addr-mailbox`` of the first From/To/Cc address
  (a group's name when the list starts with a group, as RFC 5256 reads the
  ENVELOPE), and the display name for SORT=DISPLAY (RFC 5957).
- **Message-IDs** for REFERENCES threading: Message-ID, References,
  In-Reply-To.
- **OBJECTID** (RFC 8474): EMAILID is a digest of the message's bytes and
  THREADID a digest of its thread's first Message-ID (see :func:`thread_id`).

A summary is kept as a small JSON value (:meth:`Summary.dump`) in the
folder's index, so that SORT and THREAD of a large folder read no message
twice (:mod:`.summaries`).
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field

from .envelope import parse_addresses
from .search import decode_header

VERSION = 1  # of the stored form; a summary of another version is made again


@dataclass(frozen=True)
class Summary:
    date: float | None  # sent date (Date:, UTC epoch); None: use the internal date
    subject: str  # base subject, collation key (i;unicode-casemap)
    reply: bool  # the subject is a reply or forward
    from_: str  # addr-mailbox of the first From address, collation key
    to: str
    cc: str
    display_from: str  # RFC 5957, collation key
    display_to: str
    message_id: str | None  # without <>, None when missing or invalid
    references: tuple[str, ...] = ()  # References, else the first In-Reply-To id
    emailid: str = ""
    threadid: str | None = None
    version: int = field(default=VERSION)

    def dump(self) -> bytes:
        d = asdict(self)
        d["references"] = list(self.references)
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def load(cls, raw: bytes) -> "Summary | None":
        try:
            d = json.loads(raw)
            if d.get("version") != VERSION:
                return None
            d["references"] = tuple(d["references"])
            return cls(**d)
        except (ValueError, TypeError, KeyError):
            return None


# ---------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------

def casemap(text: str) -> str:
    """i;unicode-casemap (RFC 5051): each character titlecased, then the
    whole compatibility-decomposed; compared by code point (= UTF-8 octets).
    For US-ASCII this is i;ascii-casemap."""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFKD", "".join(t if len(t := c.title()) == 1 else c for c in text))


# ---------------------------------------------------------------------------
# Base subject (RFC 5256 2.1)
# ---------------------------------------------------------------------------

_WS = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+\Z", re.I)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"(?:\s+|(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:)", re.I)
_BLOB_RE = re.compile(_BLOB)


def base_subject(raw: bytes | None) -> tuple[str, bool]:
    """(base subject, is a reply or forward) of a Subject field's value."""
    if raw is None:
        return "", False
    text = _WS.sub(" ", decode_header(raw))
    reply = False
    while True:
        # (2) trailers: "(fwd)" and whitespace
        m = _TRAILER.search(text)
        if m:
            if "(" in m.group(0):
                reply = True
            text = text[:m.start()]
        # (3)-(5) leaders and blobs, until none is left
        while True:
            changed = False
            m = _LEADER.match(text)
            while m and m.end() > 0:
                if m.group(0).strip():
                    reply = True
                text = text[m.end():]
                changed = True
                m = _LEADER.match(text)
            m = _BLOB_RE.match(text)
            if m and text[m.end():].strip():
                text = text[m.end():]
                changed = True
            if not changed:
                break
        # (6) "[fwd: ...]"
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


# ---------------------------------------------------------------------------
# Addresses, dates, message-ids
# ---------------------------------------------------------------------------

def _first_mailbox(addrs: list | None) -> str:
    """addr-mailbox of the first address (a group's name for a group)."""
    if not addrs:
        return ""
    first = addrs[0]
    return decode_header(first.mailbox or b"")


def _display(addrs: list | None) -> str:
    """RFC 5957: the display name of the first address, decoded, or its
    addr-spec when it has none; a group's name when the list starts with a
    group (as Dovecot sorts); "" without an address."""
    if not addrs:
        return ""
    a = addrs[0]
    if a.host is None:  # a group's start (or a bare word)
        return decode_header(a.mailbox or b"").strip()
    if a.name:
        name = decode_header(a.name).strip()
        if name:
            return name
    spec = (a.mailbox or b"") + (b"@" + a.host if a.host and a.host != b"MISSING_DOMAIN" else b"")
    return spec.decode("utf-8", "replace")


def _addresses(value: bytes | None) -> list | None:
    return parse_addresses(value) if value else None


def sent_date(value: bytes | None) -> float | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    if parsed is None or parsed[0] is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (ValueError, OverflowError, TypeError):
        return None


_MSGID = re.compile(rb"<([^<>\s]+)>")


def message_ids(value: bytes | None) -> list[str]:
    """The ``<id@host>`` of a field, in order, without the brackets."""
    if not value:
        return []
    return [m.decode("utf-8", "replace") for m in _MSGID.findall(value)]


def references(refs: bytes | None, in_reply_to: bytes | None) -> tuple[str, ...]:
    """RFC 5256 REFERENCES step 1: the References ids, or else the first
    valid id of In-Reply-To."""
    ids = message_ids(refs)
    if not ids:
        ids = message_ids(in_reply_to)[:1]
    return tuple(ids)


# ---------------------------------------------------------------------------
# OBJECTID
# ---------------------------------------------------------------------------

def email_id(data: bytes) -> str:
    """EMAILID (RFC 8474): a digest of the message's bytes — the same for a
    message and its copies (as the RFC wants), never changing, and the same
    if the index is ever rebuilt."""
    return "M" + hashlib.sha256(data).hexdigest()[:24]


def thread_id(refs: tuple[str, ...], message_id: str | None, emailid: str) -> str:
    """THREADID (RFC 8474): a digest of the thread's first Message-ID — the
    first of References (RFC 5322 3.6.4 keeps it when trimming), the
    In-Reply-To id, or the message's own Message-ID — so a message and its
    replies share it, computed again the same any time.  A message without
    any Message-ID is a thread of its own."""
    root = refs[0] if refs else message_id
    if not root:
        return "T" + emailid[1:]
    return "T" + hashlib.sha256(root.encode("utf-8")).hexdigest()[:24]


# ---------------------------------------------------------------------------
# The summary of one message
# ---------------------------------------------------------------------------

def summarize(header: "HeaderLike", data_digest: str) -> Summary:
    """A :class:`Summary` from a parsed header (anything with ``header(name)``
    giving the first unfolded value) and the message's EMAILID."""
    h = header.header
    subject, reply = base_subject(h("Subject"))
    ids = message_ids(h("Message-ID"))
    refs = references(h("References"), h("In-Reply-To"))
    msgid = ids[0] if ids else None
    from_, to = _addresses(h("From")), _addresses(h("To"))
    return Summary(
        date=sent_date(h("Date")),
        subject=casemap(subject),
        reply=reply,
        from_=casemap(_first_mailbox(from_)),
        to=casemap(_first_mailbox(to)),
        cc=casemap(_first_mailbox(_addresses(h("Cc")))),
        display_from=casemap(_display(from_)),
        display_to=casemap(_display(to)),
        message_id=msgid,
        references=refs,
        emailid=data_digest,
        threadid=thread_id(refs, msgid, data_digest),
    )


class HeaderLike:  # the typing of summarize's argument
    def header(self, name: str) -> bytes | None: ...
