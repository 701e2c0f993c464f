"""Our own domains are protected, even before their DNS records are published.

Mail that arrives unauthenticated on port 25 claiming to come from a hosted
domain (canonical or alias), in the envelope (MAIL FROM) or in the
``From:`` header, is refused unless it proves itself the way a remote
system sending for that domain can: SPF passes for that domain, or a DKIM
signature whose ``d=`` is aligned with it (same organizational domain)
verifies.  Without any DNS published, neither can happen, so forged
own-domain mail is refused from the first day; users send through
authenticated submission (which this rule never sees).

Where it decides: at MAIL FROM the envelope half is settled when SPF passes
(:func:`settled_at_mail`); anything else waits for the end of DATA, where
DKIM and the ``From:`` header are known (:func:`check`), because a DKIM
signature may still vouch for the message.  Pure functions; the caller says
which names are hosted.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..replytext import printable
from ..wire.replies import Reply
from .dkimverify import DkimResult
from .dmarc import aligned
from .spf import SpfResult


def _proved(domain: str, spf: SpfResult | None, dkim: list[DkimResult]) -> bool:
    if spf is not None and spf.passed and aligned(spf.domain, domain):
        return True
    return any(r.passed and aligned(r.domain, domain) for r in dkim)


def _unsure(domain: str, spf: SpfResult | None, dkim: list[DkimResult]) -> bool:
    if spf is not None and spf.result == "temperror" and aligned(spf.domain, domain):
        return True
    return any(r.result == "temperror" and aligned(r.domain, domain) for r in dkim)


def settled_at_mail(sender_domain: str, spf: SpfResult | None, is_hosted: Callable[[str], bool]) -> bool:
    """True when the envelope sender needs nothing more: not hosted, or SPF
    passed for it."""
    if not sender_domain or not is_hosted(sender_domain):
        return True
    return spf is not None and spf.passed and aligned(spf.domain, sender_domain)


def check(sender_domain: str, author_domains: Iterable[str], spf: SpfResult | None, dkim: Iterable[DkimResult],
          is_hosted: Callable[[str], bool]) -> Reply | None:
    """The refusal for unproven own-domain mail at the end of DATA; None: fine.
    ``451 4.7.5`` instead of ``550`` when a DNS failure kept a proof from
    being checked."""
    dkim = list(dkim)
    claims: list[tuple[str, str]] = []
    if sender_domain and is_hosted(sender_domain):
        claims.append(("envelope sender", sender_domain.lower()))
    claims += [("From: header", d) for d in author_domains if is_hosted(d)]
    for where, domain in claims:
        if _proved(domain, spf, dkim):
            continue
        if _unsure(domain, spf, dkim):
            return Reply(451, "4.7.5", printable(
                f"Cannot check that this message may use {domain} (DNS failure); try again later"),
                "own_domain_temperror")
        return Reply(550, "5.7.1", printable(
            f"{domain} in the {where} is a domain hosted here: send through authenticated submission,"
            f" or with SPF or DKIM passing for {domain}"), "own_domain")
    return None
