"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf.

pyspf does the evaluation: the record syntax, the mechanisms and macros, and
the RFC's processing limits (10 DNS-querying terms, 10 MX and PTR names, 2
void lookups: section 4.6.4; its ``strict`` mode).  What it does not do is
asyncio, or ask correo's nameservers; so it evaluates over DNS answers this
module gives it:

* :func:`evaluate` is pure: pyspf over a mapping of known answers.  When
  pyspf wants a ``(name, type)`` that is not known yet, evaluation stops with
  :class:`NeedAnswer`.
* :func:`check` is the I/O edge: it fetches what was missing through the
  connection's :class:`~.dnsanswers.DnsView` and evaluates again, until a
  result comes out.  A record needs a handful of rounds; each round is a few
  hundred microseconds of pure Python, small beside one DNS round trip.

pyspf asks DNS through a module-level function (``spf.DNSLookup``); this
module sets it once to a dispatcher that answers from the mapping of the
evaluation under way (a context variable), and falls back to pyspf's own
lookup for any other user of pyspf in the process.

What each result implies (:func:`reply_for`): ``fail`` refuses the
transaction (``550 5.7.23``, RFC 7372) when the policy says so (the default,
as Postfix's policyd-spf does); ``temperror`` defers it (``451 4.7.24``,
never a silent pass); ``pass``, ``none``, ``neutral``, ``softfail`` and
``permerror`` go on to DMARC and the own-domain rule, which decide at the
end of DATA with DKIM known.
"""
from __future__ import annotations

import asyncio
import contextvars
import ipaddress
from dataclasses import dataclass

import spf as pyspf

from ..replytext import printable
from ..wire.replies import Reply
from . import dnsanswers
from .dnsanswers import Answer, Answers, DnsView

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# RFC 7208 section 4.6.4: at least 20 seconds for the whole check.
TOTAL_TIMEOUT_SECONDS = 20.0
# Rounds of evaluate-then-fetch; pyspf's own limits end a check long before.
MAX_ROUNDS = 200


class NeedAnswer(Exception):
    """pyspf asked for an answer that is not known yet."""

    def __init__(self, name: str, rdtype: str) -> None:
        super().__init__(f"{name} {rdtype}")
        self.name = name
        self.rdtype = rdtype


@dataclass(frozen=True)
class SpfResult:
    identity: str  # "mailfrom" or "helo"
    subject: str  # what was checked: the MAIL FROM address, or the HELO name
    domain: str  # the domain whose record was evaluated
    result: str  # one of RESULTS
    explanation: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"


# The evaluation under way: its answers, and the keys pyspf consulted (for
# :mod:`.spfcache`: a result holds while those answers do).
_current: contextvars.ContextVar[tuple[Answers, set[tuple[str, str]] | None] | None] = contextvars.ContextVar(
    "correo_spf_answers", default=None)
_pyspf_lookup = pyspf.DNSLookup


def _dispatch(name, qtype, strict=True, timeout=30):
    current = _current.get()
    if current is None:  # not ours: pyspf's own lookup
        return _pyspf_lookup(name, qtype, strict, timeout)
    answers, used = current
    name = str(name)
    k = dnsanswers.key(name, qtype)
    if used is not None:
        used.add(k)
    answer = answers.get(k)
    if answer is None:
        raise NeedAnswer(k[0], qtype.upper())
    if answer.temporary:
        raise pyspf.TempError(answer.error or f"DNS failure for {name}")
    if not answer.ok:
        return []
    if qtype in ("TXT", "SPF"):
        return [((name, qtype), list(record)) for record in answer.records]
    return [((name, qtype), record) for record in answer.records]


pyspf.DNSLookup = _dispatch


def _domain_of(identity: str, sender: str, helo: str) -> str:
    if identity == "helo":
        return helo.rstrip(".").lower()
    return sender.rpartition("@")[2].rstrip(".").lower()


def _is_domain(name: str) -> bool:
    """A HELO name SPF can check: a dotted domain, not an address literal."""
    name = name.strip().rstrip(".")
    if not name or name.startswith("[") or "." not in name:
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        return all(0 < len(label) < 64 for label in name.split("."))


def evaluate(ip: str, sender: str, helo: str, answers: Answers, *, receiver: str = "",
             used: set[tuple[str, str]] | None = None) -> SpfResult:
    """The SPF result for ``sender`` (the MAIL FROM address; empty for the
    null sender, then the HELO identity is checked) from client ``ip``.
    Pure over ``answers``; raises :class:`NeedAnswer` for a missing one.
    ``used``, when given, collects the ``(name, type)`` keys consulted."""
    identity = "mailfrom" if sender else "helo"
    subject = sender if sender else helo
    if identity == "helo" and not _is_domain(helo):
        return SpfResult("helo", helo, helo.lower(), "none", "HELO name is not a domain")
    if identity == "mailfrom" and "@" not in sender:
        return SpfResult("mailfrom", sender, "", "none", "no domain in MAIL FROM")
    query = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver or "unknown", strict=True, querytime=0)
    token = _current.set((answers, used))
    try:
        result, _code, explanation = query.check()
    finally:
        _current.reset(token)
    if result not in RESULTS:  # pyspf's older names, should they appear
        result = {"error": "temperror", "unknown": "permerror", "tempfail": "temperror"}.get(result, "permerror")
    return SpfResult(identity, subject, _domain_of(identity, sender, helo), result, explanation or "")


def evaluate_helo(ip: str, helo: str, answers: Answers, *, receiver: str = "") -> SpfResult:
    """The HELO identity (RFC 7208 section 2.3), checked on its own."""
    return evaluate(ip, "", helo, answers, receiver=receiver)


async def check(view: DnsView, ip: str, sender: str, helo: str, *, receiver: str = "",
                timeout: float = TOTAL_TIMEOUT_SECONDS, used: set[tuple[str, str]] | None = None) -> SpfResult:
    """:func:`evaluate`, fetching the answers it needs through ``view``.
    ``used``: as for :func:`evaluate` (the keys of every round)."""
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_ROUNDS):
                try:
                    return evaluate(ip, sender, helo, view.answers, receiver=receiver, used=used)
                except NeedAnswer as need:
                    await view.lookup(need.name, need.rdtype)
    except TimeoutError:
        pass
    identity = "mailfrom" if sender else "helo"
    return SpfResult(identity, sender or helo, _domain_of(identity, sender, helo), "temperror",
                     f"SPF check did not finish within {timeout:g} seconds")


# ---------------------------------------------------------------------------
# What a result means for the SMTP transaction.
# ---------------------------------------------------------------------------

def reply_for(result: SpfResult, *, reject_fail: bool = True) -> Reply | None:
    """The reply a result implies at MAIL FROM; None: go on."""
    who = result.subject or "<>"
    if result.result == "fail" and reject_fail:
        why = f": {result.explanation}" if result.explanation and "not authorized" not in result.explanation else ""
        return Reply(550, "5.7.23", printable(
            f"SPF validation failed: {result.domain} does not allow this host to send mail as {who}{why}"),
            "spf_fail")
    if result.result == "temperror":
        return Reply(451, "4.7.24", printable(
            f"SPF check of {result.domain or who} could not be completed ({result.explanation or 'DNS failure'});"
            " try again later"), "spf_temperror")
    return None

