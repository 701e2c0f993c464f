"""FETCH BODY and BODYSTRUCTURE (RFC 3501 section 7.4.2) from :mod:`..message`.

``BODYSTRUCTURE`` carries the extension data (MD5, disposition, language,
location; multipart parameters); ``BODY`` is the same without it.  Sizes are
the octets of each part's body as stored, lines are counted for ``text/*``
and ``message/rfc822`` parts.
"""
from __future__ import annotations

from ..message import Entity, parse_params
from .envelope import envelope
from .responses import NIL, nstring, string


def _params(params: list[tuple[str, str]]) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(string(k.lower()) + b" " + string(v) for k, v in params) + b")"


def _disposition(ent: Entity) -> bytes:
    value = ent.header("Content-Disposition")
    if value is None:
        return NIL
    kind, params = parse_params(value)
    if not kind:
        return NIL
    return b"(" + string(kind.lower()) + b" " + _params(params) + b")"


def _language(ent: Entity) -> bytes:
    value = ent.header("Content-Language")
    if value is None:
        return NIL
    langs = [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]
    if not langs:
        return NIL
    if len(langs) == 1:
        return string(langs[0])
    return b"(" + b" ".join(string(x) for x in langs) + b")"


def _location(ent: Entity) -> bytes:
    value = ent.header("Content-Location")
    return NIL if value is None else string(value)


def body_structure(ent: Entity, *, extended: bool = True) -> bytes:
    if ent.is_multipart:
        parts = b"".join(body_structure(c, extended=extended) for c in ent.children)
        out = parts + b" " + string(ent.subtype)
        if extended:
            params = [(k, v) for k, v in ent.params]
            out += b" " + b" ".join([_params(params), _disposition(ent), _language(ent), _location(ent)])
        return b"(" + out + b")"
    maintype, subtype = ent.maintype, ent.subtype
    if maintype == "multipart":  # no parts found: shown as plain text, as Dovecot does
        maintype, subtype = "text", "plain"
    encoding = ent.header("Content-Transfer-Encoding")
    enc = encoding.decode("latin-1").strip() if encoding and encoding.strip() else "7BIT"
    fields = [
        string(maintype),
        string(subtype),
        _params(ent.params),
        nstring(ent.header("Content-ID")),
        nstring(ent.header("Content-Description")),
        string(enc),
        str(ent.body_size).encode(),
    ]
    if ent.message is not None:
        fields += [envelope(ent.message), body_structure(ent.message, extended=extended),
                   str(ent.lines()).encode()]
    elif maintype == "text":
        fields.append(str(ent.lines()).encode())
    if extended:
        fields += [nstring(ent.header("Content-MD5")), _disposition(ent), _language(ent), _location(ent)]
    return b"(" + b" ".join(fields) + b")"
