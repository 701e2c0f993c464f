"""Sender authentication for one SMTP connection: what the relay calls.

:class:`MailAuth` is built once per relay (the process's DNS answer cache,
:class:`~.dnscache.AnswerCache`; our authserv-id, which names are hosted,
the policy); :meth:`MailAuth.connection` makes a :class:`ConnectionAuth`
for each port-25 connection, holding that connection's DNS answers
(:class:`~.dnsanswers.DnsView`) and SPF results, so that nothing is asked
twice in one connection, and what the previous connections learnt is not
asked again while its TTL lasts; an SPF result another connection from the
same client worked out is not evaluated again while its answers last
(:class:`~.spfcache.SpfCache`).

* :meth:`ConnectionAuth.at_mail`: SPF for the MAIL FROM and HELO identities
  (:mod:`.spf`) → :class:`MailVerdict`, with the reply when SPF alone
  decides (``fail`` → ``550 5.7.23``, ``temperror`` → ``451 4.7.24``).
* :meth:`ConnectionAuth.at_data`: every DKIM signature (:mod:`.dkimverify`),
  DMARC for each ``From:`` domain (:mod:`.dmarc`), the own-domain rule
  (:mod:`.owndomain`) → :class:`DataVerdict`: the reply when the message is
  refused or deferred, whether it goes to Junk, the message with forged
  ``Authentication-Results:`` removed, and our own header to put on top
  (:mod:`.authresults`).

Authenticated submission never comes here: the relay calls this for port 25
only.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Callable

import dns.asyncresolver

from .. import logs
from ..wire.replies import Reply
from . import authresults, dkimverify, dmarc, owndomain, spf, spfcache
from . import headers as hdrs
from .dkimverify import DkimResult
from .dmarc import DmarcResult
from .dnscache import AnswerCache
from .dnsanswers import DnsView
from .spf import SpfResult
from .spfcache import SpfCache

log = logs.get(__name__)


@dataclass(frozen=True)
class AuthPolicy:
    """Choices a site may make; the defaults are what Postfix with
    policyd-spf and OpenDMARC do out of the box."""

    # SPF "fail" for MAIL FROM or HELO refuses at MAIL (550 5.7.23); when
    # False a fail is left to DMARC and the own-domain rule at end of DATA.
    reject_spf_fail: bool = True
    # Refuse unauthenticated mail claiming a hosted domain (owndomain).
    protect_own_domains: bool = True
    # Act on DMARC policies (reject, quarantine); False only reports them.
    enforce_dmarc: bool = True


@dataclass(frozen=True)
class MailVerdict:
    mailfrom: SpfResult  # the MAIL FROM identity (the HELO one for the null sender)
    helo: SpfResult | None  # the HELO identity checked on its own (None for the null sender)
    reply: Reply | None  # a refusal or deferral at MAIL; None: go on
    sender: str = ""

    @property
    def spf_results(self) -> list[SpfResult]:
        return [self.mailfrom] + ([self.helo] if self.helo is not None else [])


@dataclass(frozen=True)
class DataVerdict:
    reply: Reply | None  # refusal or deferral at end of DATA; None: accept
    junk: bool  # deliver to the recipients' Junk folder (DMARC quarantine)
    header: bytes  # our Authentication-Results field, CRLF-terminated
    message: bytes  # the message, forged Authentication-Results fields removed
    dkim: tuple[DkimResult, ...] = ()
    dmarc: tuple[DmarcResult, ...] = ()
    removed: int = 0  # forged fields removed
    notes: tuple[str, ...] = field(default=())


class MailAuth:
    def __init__(self, resolver: AnswerCache | dns.asyncresolver.Resolver, authserv_id: str,
                 is_hosted: Callable[[str], bool], *,
                 policy: AuthPolicy = AuthPolicy(), rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] | None = None, spf_timeout: float = spf.TOTAL_TIMEOUT_SECONDS,
                 spf_cache_entries: int = spfcache.DEFAULT_MAX_ENTRIES) -> None:
        self.cache = AnswerCache.of(resolver)  # shared by every connection of the relay
        self.resolver = self.cache.resolver
        # SPF results while their answers last (0: evaluate every connection's afresh)
        self.spf_cache = SpfCache(self.cache, max_entries=spf_cache_entries) if spf_cache_entries else None
        dmarc.load_suffix_list()
        self.authserv_id = authserv_id.lower().rstrip(".")
        self.is_hosted = is_hosted
        self.policy = policy
        self.rng = rng
        self.clock = clock
        self.spf_timeout = spf_timeout

    def connection(self, peer_ip: str) -> "ConnectionAuth":
        return ConnectionAuth(self, peer_ip)


class ConnectionAuth:
    def __init__(self, auth: MailAuth, peer_ip: str) -> None:
        self.auth = auth
        self.peer_ip = peer_ip
        self.view = DnsView(auth.cache)
        self._spf: dict[tuple[str, str], SpfResult] = {}

    def _spf_known(self, sender: str, helo: str) -> SpfResult | None:
        """The result this connection, or the relay's SPF cache, already has."""
        k = (sender.lower(), helo.lower())
        known = self._spf.get(k)
        if known is None and self.auth.spf_cache is not None:
            known = self.auth.spf_cache.get(self.peer_ip, sender, helo, self.auth.authserv_id)
            if known is not None:
                self._spf[k] = known
        return known

    async def _spf_check(self, sender: str, helo: str) -> SpfResult:
        known = self._spf_known(sender, helo)
        if known is not None:
            return known
        used: set[tuple[str, str]] = set()
        auth = self.auth
        result = await spf.check(self.view, self.peer_ip, sender, helo, receiver=auth.authserv_id,
                                 timeout=auth.spf_timeout, used=used)
        self._spf[(sender.lower(), helo.lower())] = result
        if auth.spf_cache is not None:
            auth.spf_cache.put(self.peer_ip, sender, helo, auth.authserv_id, result, used, self.view.answers)
        return result

    def at_mail_known(self, helo: str, sender: str) -> MailVerdict | None:
        """:meth:`at_mail` without waiting, when every SPF result it needs is
        known already (this connection's, or the SPF cache's); None otherwise."""
        helo = helo or ""
        mailfrom = self._spf_known(sender, helo)
        if mailfrom is None:
            return None
        if not sender:
            return self._mail_verdict(mailfrom, None, sender, helo)
        helo_result = self._spf_known("", helo)
        if helo_result is None:
            return None
        return self._mail_verdict(mailfrom, helo_result, sender, helo)

    async def at_mail(self, helo: str, sender: str) -> MailVerdict:
        """SPF at MAIL FROM (``sender`` empty for the null sender)."""
        helo = helo or ""
        if sender:
            mailfrom, helo_result = self._spf_known(sender, helo), self._spf_known("", helo)
            if mailfrom is None or helo_result is None:  # one to evaluate: both at once
                mailfrom, helo_result = await asyncio.gather(self._spf_check(sender, helo),
                                                             self._spf_check("", helo))
        else:
            mailfrom, helo_result = await self._spf_check("", helo), None
        return self._mail_verdict(mailfrom, helo_result, sender, helo)

    def _mail_verdict(self, mailfrom: SpfResult, helo_result: SpfResult | None, sender: str,
                      helo: str) -> MailVerdict:
        policy = self.auth.policy
        reply = spf.reply_for(mailfrom, reject_fail=policy.reject_spf_fail)
        if reply is None and helo_result is not None and helo_result.result == "fail" and policy.reject_spf_fail:
            reply = spf.reply_for(helo_result, reject_fail=True)
        # At info only when it refuses (one info line per message: the
        # relay's message_accepted carries the SPF result).
        (log.info if reply else log.debug)("spf", peer=self.peer_ip, sender=sender, helo=helo,
                                           result=mailfrom.result,
                                           helo_result=helo_result.result if helo_result else None,
                                           refused=str(reply) if reply else None)
        return MailVerdict(mailfrom, helo_result, reply, sender)

    async def at_data(self, mail: MailVerdict, message: bytes) -> DataVerdict:
        """DKIM, DMARC and the own-domain rule over the whole message."""
        auth, policy = self.auth, self.auth.policy
        dkim_results = await dkimverify.check(self.view, message, now=auth.clock() if auth.clock else None)
        authors, problem = hdrs.author_domains(message)
        spf_for_dmarc = mail.mailfrom
        dmarc_results = [await dmarc.check(self.view, d, spf_for_dmarc, dkim_results, rng=auth.rng) for d in authors]
        reply: Reply | None = None
        junk = False
        sender_domain = mail.sender.rpartition("@")[2].lower() if mail.sender else ""
        if policy.protect_own_domains:
            reply = owndomain.check(sender_domain, authors, spf_for_dmarc, dkim_results, auth.is_hosted)
        deciding = dmarc.worst(dmarc_results)
        if deciding is not None and policy.enforce_dmarc:
            dmarc_reply = dmarc.reply_for(deciding)
            if dmarc_reply is not None and (reply is None or (reply.temporary and dmarc_reply.permanent)):
                reply = dmarc_reply
            junk = dmarc.junk(deciding)
        cleaned, removed = authresults.strip_claims(message, [auth.authserv_id])
        header = authresults.header(auth.authserv_id, spf=mail.spf_results, dkim=dkim_results, dmarc=dmarc_results)
        notes = (problem,) if problem else ()
        # At info when it decided something (refused, junk, forged results
        # removed); else debug, the relay's message_accepted carries DMARC.
        (log.info if reply or junk or removed else log.debug)(
                 "mail_auth", peer=self.peer_ip, sender=mail.sender,
                 dkim=[f"{r.result}:{r.domain}" for r in dkim_results],
                 dmarc=[f"{r.result}:{r.domain}:{r.disposition}" for r in dmarc_results],
                 junk=junk, forged_removed=removed, refused=str(reply) if reply else None)
        return DataVerdict(reply, junk and reply is None, header, cleaned, tuple(dkim_results), tuple(dmarc_results),
                           removed, notes)
