"""The ``Authentication-Results:`` header (RFC 8601), one per message.

:func:`header` writes the verdicts of :mod:`.spf`, :mod:`.dkimverify` and
:mod:`.dmarc` into one field under our authserv-id (the MailDomain's
hostname), with the RFC's properties: ``smtp.mailfrom`` / ``smtp.helo`` for
SPF, ``header.d``, ``header.s``, ``header.a`` and ``header.b`` (RFC 6008) for
each DKIM signature, ``header.from`` and the policy for DMARC; reasons and
comments say why a check did not pass.  The result clauses are built with
the ``authres`` package (its quoting of values); the field is folded between
clauses.

:func:`strip_claims` removes the fields already in a message that claim our
authserv-id (section 5: a receiver must not trust, and should remove, such
fields from outside), so that downstream readers (the mailstore, Sieve
rules, users' clients) see only the verdicts we made.  Pure functions.
"""
from __future__ import annotations

import functools
import re
from typing import Iterable

from authres.core import AuthenticationResult, AuthenticationResultProperty

from . import headers as hdrs
from .dkimverify import DkimResult
from .dmarc import DmarcResult
from .spf import SpfResult

FIELD = "Authentication-Results"


def _clause(method: str, result: str, *, comment: str = "", reason: str = "",
            props: Iterable[tuple[str, str, str]] = ()) -> str:
    clause = AuthenticationResult(method, result=result, result_comment=comment or None, reason=reason or None,
                                  properties=[AuthenticationResultProperty(t, n, v) for t, n, v in props if v])
    return str(clause)


def _comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment."""
    text = re.sub(r"[()\\\r\n]", " ", text)
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text).strip()[:200]


def spf_clause(result: SpfResult) -> str:
    prop = ("smtp", "mailfrom", result.domain) if result.identity == "mailfrom" else ("smtp", "helo", result.subject)
    comment = "" if result.result in ("pass", "none") else _comment(result.explanation)
    return _clause("spf", result.result, comment=comment, props=[prop])


def dkim_clause(result: DkimResult) -> str:
    return _clause("dkim", result.result, reason=_comment(result.reason),
                   props=[("header", "d", result.domain), ("header", "s", result.selector),
                          ("header", "a", result.algorithm), ("header", "b", result.header_b)])


def dmarc_clause(result: DmarcResult) -> str:
    comment = ""
    if result.record is not None:
        parts = [f"p={result.record.p.upper()}"]
        if result.record.sp:
            parts.append(f"sp={result.record.sp.upper()}")
        if result.result == "fail":
            parts.append(f"dis={result.disposition.upper()}")
        comment = " ".join(parts)
    elif result.reason and result.result != "none":
        comment = _comment(result.reason)
    return _clause("dmarc", result.result, comment=comment, props=[("header", "from", result.domain)])


def header(authserv_id: str, *, spf: Iterable[SpfResult] = (), dkim: Iterable[DkimResult] | None = None,
           dmarc: Iterable[DmarcResult] | None = None, extra: Iterable[str] = ()) -> bytes:
    """The whole field, folded, ending with CRLF.  ``dkim=None`` leaves DKIM
    out (not checked); an empty list says ``dkim=none`` (no signature).
    The same verdicts give the same field: a sender whose every message gets
    the same verdicts costs a lookup (results are frozen values)."""
    return _header(authserv_id, tuple(spf), None if dkim is None else tuple(dkim),
                   None if dmarc is None else tuple(dmarc), tuple(extra))


@functools.lru_cache(maxsize=1024)
def _header(authserv_id: str, spf: tuple[SpfResult, ...], dkim: tuple[DkimResult, ...] | None,
            dmarc: tuple[DmarcResult, ...] | None, extra: tuple[str, ...]) -> bytes:
    clauses = [spf_clause(r) for r in spf]
    if dkim is not None:
        clauses += [dkim_clause(r) for r in dkim] or ["dkim=none"]
    if dmarc is not None:
        clauses += [dmarc_clause(r) for r in dmarc]
    clauses += list(extra)
    return hdrs.fold(FIELD, [authserv_id] + (clauses or ["none"]))


_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def authserv_id(value: str) -> str:
    """The authserv-id an ``Authentication-Results:`` value starts with."""
    text = value
    for _ in range(5):  # nested comments, a few levels deep at most
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    text = text.strip()
    if text.startswith('"'):
        m = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return (m.group(1) if m else text.strip('"')).lower()
    return re.split(r"[\s;]", text, maxsplit=1)[0].lower().rstrip(".")


def strip_claims(message: bytes, our_ids: Iterable[str]) -> tuple[bytes, int]:
    """``message`` without the ``Authentication-Results:`` fields that claim
    one of ``our_ids``; and how many were removed."""
    ours = {i.lower().rstrip(".") for i in our_ids if i}

    def claims(field: hdrs.Field) -> bool:
        return field.lname == "authentication-results" and authserv_id(field.value) in ours

    out, dropped = hdrs.remove(message, claims)
    return out, len(dropped)
