"""The relay's port-25 defences, stage by stage: what the relay calls.

Each check lives in its own module and decides as early as it can
(DESIGN.md, "Where the second wave's parts go"):

=============  ==========================================================
stage          checks
=============  ==========================================================
connect        DNS blocklists/allowlists start (:mod:`.scanning.dnsbl`)
MAIL FROM      SPF for MAIL FROM and HELO (:mod:`.mailauth.spf`);
               the envelope half of the own-domain rule when SPF passes
RCPT TO        the DNSBL verdict (refused here, so logs name sender and
               recipient); SRS bounce addresses verified (:mod:`.srs`)
end of DATA    DKIM (:mod:`.mailauth.dkimverify`), DMARC (:mod:`.mailauth.dmarc`),
               the own-domain rule (:mod:`.mailauth.owndomain`), then rspamd
               (:mod:`.scanning.rspamd`); one ``Authentication-Results:``
               (:mod:`.mailauth.authresults`), ``X-Spam-*`` fields
=============  ==========================================================

:class:`Defences` is built once per relay (:func:`build`, from
``relay.filter`` of ``correo.yaml``, with the resolver of the top-level
``nameservers``, :func:`.dnsresolver.make_resolver`, under one DNS answer
cache for the process, :class:`.mailauth.dnscache.AnswerCache`, and the
domains' SRS keys); :meth:`Defences.connection`
gives each port-25 connection a :class:`ConnectionDefences`, whose methods
return a :class:`~.wire.replies.Reply` to send instead of the usual one (or
None to go on).  Authenticated submission never comes here.

Mail bound for Junk (DMARC ``quarantine``, rspamd ``add header`` /
``rewrite subject``) carries ``X-Spam-Flag: YES``; the ``X-Spam-*`` fields a
message arrives with are removed first, so that only our verdict files mail
(the mailstore files it, :mod:`.mailstore.junk`).

A message accepted although its sender failed SPF or DMARC (``rejectSpfFail:
false``, DMARC ``p=none`` or ``quarantine``, ``pct``) is *unverified*
(:attr:`DataOutcome.unverified`): that verdict goes to the queue with the
message (:mod:`.backscatter.verdict`), which then never sends its sender a
notice, so that a forged sender gets no backscatter.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable

import dns.asyncresolver

from . import logs
from .config import ServerConfig
from .dnsresolver import make_resolver
from .mailauth import headers as hdrs
from .mailauth.dnscache import AnswerCache
from .mailauth.session import AuthPolicy, ConnectionAuth, DataVerdict, MailAuth, MailVerdict
from .scanning import rspamd as rspamdmod
from .scanning.dnsbl import Dnsbl, DnsblSettings, DnsblVerdict, DnsblZone
from .scanning.rspamd import Envelope, RspamdClient, RspamdSettings, ScanResult
from .srs import Srs, SrsDomains, SrsError, is_srs
from .srs import refusal as srs_refusal
from .wire.replies import Reply

log = logs.get(__name__)


@dataclass(frozen=True)
class DefenceSettings:
    """What runs on port 25 (the relay's ``filter`` settings)."""

    auth: AuthPolicy | None = AuthPolicy()  # None: no SPF/DKIM/DMARC/own-domain checks
    dnsbl: DnsblSettings = DnsblSettings()
    rspamd: RspamdSettings | None = None


@dataclass(frozen=True)
class DataOutcome:
    reply: Reply | None  # refusal or deferral; None: hand the message to the queue
    message: bytes  # what to hand over: our headers on top, forged ones removed
    junk: bool = False
    reasons: tuple[str, ...] = ()  # for metrics: spf, dkim, dmarc, own_domain, spam, virus...
    auth: DataVerdict | None = None
    scan: ScanResult | None = None
    unverified: str = ""  # "spf" or "dmarc" when the sender failed it and the message was accepted anyway

    def verdicts(self) -> list[tuple[str, str]]:
        """(check, result) pairs for metrics: dkim and dmarc per result, rspamd's reason."""
        out: list[tuple[str, str]] = []
        if self.auth is not None:
            out += [("dkim", r.result) for r in self.auth.dkim] or [("dkim", "none")]
            out += [("dmarc", r.result) for r in self.auth.dmarc]
        if self.scan is not None:
            out.append(("rspamd", self.scan.reason))
        return out


@dataclass
class RcptOutcome:
    reply: Reply | None
    recipient: str  # the address to deliver to (an SRS bounce address reversed)
    srs: bool = False


class Defences:
    def __init__(self, resolver: AnswerCache | dns.asyncresolver.Resolver, authserv_id: str,
                 is_hosted: Callable[[str], bool],
                 settings: DefenceSettings, *, srs: Srs | SrsDomains | None = None, rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.is_hosted = is_hosted
        self.srs = srs
        self.dns = AnswerCache.of(resolver)  # one for the process: SPF, DKIM, DMARC and DNSBL answers
        self.auth = (MailAuth(self.dns, authserv_id, is_hosted, policy=settings.auth, rng=rng, clock=clock)
                     if settings.auth is not None else None)
        self.dnsbl = Dnsbl(self.dns, settings.dnsbl) if settings.dnsbl.zones else None
        self.rspamd = RspamdClient(settings.rspamd) if settings.rspamd is not None else None
        self.authserv_id = authserv_id

    def connection(self, peer_ip: str) -> "ConnectionDefences":
        return ConnectionDefences(self, peer_ip)

    async def close(self) -> None:
        if self.rspamd is not None:
            await self.rspamd.close()


class ConnectionDefences:
    def __init__(self, defences: Defences, peer_ip: str) -> None:
        self.defences = defences
        self.peer_ip = peer_ip
        self.auth: ConnectionAuth | None = defences.auth.connection(peer_ip) if defences.auth else None
        self._dnsbl: asyncio.Task[DnsblVerdict] | None = None
        self.mail: MailVerdict | None = None

    # -- connect ----------------------------------------------------------------
    def connected(self) -> None:
        """Start the DNSBL lookups (their verdict is awaited at RCPT)."""
        if self.defences.dnsbl is not None and self._dnsbl is None:
            self._dnsbl = asyncio.ensure_future(self.defences.dnsbl.check(self.peer_ip))

    def close(self) -> None:
        if self._dnsbl is not None and not self._dnsbl.done():
            self._dnsbl.cancel()

    # -- MAIL FROM --------------------------------------------------------------
    async def at_mail(self, helo: str, sender: str) -> Reply | None:
        self.mail = None
        if self.auth is None:
            return None
        self.mail = await self.auth.at_mail(helo, sender)
        return self.mail.reply

    def at_mail_known(self, helo: str, sender: str) -> tuple[bool, Reply | None]:
        """:meth:`at_mail` without waiting: ``(True, refusal or None)`` when
        the SPF results it needs are known already, ``(False, None)`` when
        :meth:`at_mail` has to be awaited."""
        self.mail = None
        if self.auth is None:
            return True, None
        verdict = self.auth.at_mail_known(helo, sender)
        if verdict is None:
            return False, None
        self.mail = verdict
        return True, verdict.reply

    def mail_verdicts(self) -> list[tuple[str, str]]:
        """(check, result) pairs for metrics after :meth:`at_mail`."""
        if self.mail is None:
            return []
        return [("spf", self.mail.mailfrom.result)] + ([("spf_helo", self.mail.helo.result)] if self.mail.helo else [])

    # -- RCPT TO ----------------------------------------------------------------
    def rcpt_ready(self) -> bool:
        """Whether :meth:`at_rcpt` can answer without waiting (the DNSBL
        verdict, if any, has come): then :meth:`at_rcpt_now` gives it."""
        return self._dnsbl is None or self._dnsbl.done()

    async def at_rcpt(self, recipient: str) -> RcptOutcome:
        if self._dnsbl is not None:
            await asyncio.shield(self._dnsbl)
        return self.at_rcpt_now(recipient)

    def at_rcpt_now(self, recipient: str) -> RcptOutcome:
        """:meth:`at_rcpt` once :meth:`rcpt_ready`."""
        if self._dnsbl is not None:
            verdict = self._dnsbl.result()
            if verdict.reply is not None:
                return RcptOutcome(verdict.reply, recipient)
        srs = self.defences.srs
        domain = recipient.rpartition("@")[2]
        if srs is not None and is_srs(recipient) and self.defences.is_hosted(domain):
            try:
                return RcptOutcome(None, srs.reverse(recipient), srs=True)
            except SrsError as exc:
                return RcptOutcome(srs_refusal(exc), recipient)
        return RcptOutcome(None, recipient)

    # -- end of DATA ------------------------------------------------------------
    async def at_data(self, message: bytes, envelope: Envelope) -> DataOutcome:
        reasons: list[str] = []
        verdict: DataVerdict | None = None
        junk = False
        if self.auth is not None and self.mail is not None:
            verdict = await self.auth.at_data(self.mail, message)
            message, junk = verdict.message, verdict.junk
            if verdict.reply is not None:
                return DataOutcome(verdict.reply, message, reasons=(_label(verdict.reply),), auth=verdict)
            if junk:
                reasons.append("dmarc_quarantine")
        scan: ScanResult | None = None
        if self.defences.rspamd is not None:
            scan = await self.defences.rspamd.check(message, envelope)
            if scan.reply is not None:
                return DataOutcome(scan.reply, message, reasons=tuple(reasons) + (scan.reason,), auth=verdict,
                                   scan=scan)
            junk = junk or scan.junk
            if scan.junk:
                reasons.append("spam_junk")
            message = rspamdmod.apply(message, scan, junk=junk)
        else:
            message = _mark(message, junk)
        if verdict is not None:
            message = verdict.header + message
        return DataOutcome(None, message, junk, tuple(reasons), verdict, scan, self.unverified(verdict))

    def unverified(self, verdict: DataVerdict | None) -> str:
        """Why the sender of an accepted message is not to be trusted with
        notices: ``spf`` (its MAIL FROM failed SPF), ``dmarc`` (its From:
        failed DMARC), or "" (nothing failed)."""
        if self.mail is not None and self.mail.mailfrom.result == "fail":
            return "spf"
        if verdict is not None and any(r.result == "fail" for r in verdict.dmarc):
            return "dmarc"
        return ""


def build(cfg: ServerConfig, *, clock: Callable[[], float] = time.time) -> Defences | None:
    """The defences ``relay.filter`` asks for (None when it asks for none:
    logged as a warning, since port 25 then takes any sender's word)."""
    flt = cfg.relay.filter
    if flt is None:
        log.warning("port25_without_defences", hint="relay.filter is not set in correo.yaml: no SPF, DKIM, DMARC "
                    "or own-domain checks; the renderer writes it from the MailDomain's spec.filter")
        return None
    sa = flt.sender_auth
    auth = AuthPolicy(reject_spf_fail=sa.reject_spf_fail, protect_own_domains=sa.protect_own_domains,
                      enforce_dmarc=sa.enforce_dmarc) if sa.enabled else None
    rspamd = None
    if flt.rspamd is not None:
        rs = flt.rspamd
        password = ""
        if rs.password_file:
            password = cfg.path(rs.password_file).read_text(encoding="utf-8").strip("\r\n")
        rspamd = RspamdSettings(url=rs.url, password=password, timeout_seconds=rs.timeout_seconds,
                                on_failure=rs.on_failure, virus_symbols=tuple(rs.virus_symbols))
    dnsbl = DnsblSettings(zones=tuple(DnsblZone(z.zone, z.action, z.weight, tuple(z.return_codes), z.message)
                                      for z in flt.dnsbl.zones),
                          threshold=flt.dnsbl.threshold, cache_seconds=flt.dnsbl.cache_seconds)
    srs = SrsDomains.from_config(cfg, clock=clock, on_error=lambda domain, exc: log.error(
        "srs_keys_unreadable", domain=domain, error=str(exc)))
    log.info("port25_defences", sender_auth=auth is not None, rspamd=flt.rspamd.url if flt.rspamd else None,
             dnsbl=[z.zone for z in dnsbl.zones], srs=sorted(srs.by_name), nameservers=list(cfg.nameservers) or "system")
    return Defences(make_resolver(cfg.nameservers), cfg.hostname, cfg.is_hosted, DefenceSettings(auth, dnsbl, rspamd),
                    srs=srs or None, clock=clock)


def _label(reply: Reply) -> str:
    return reply.reason or ("refused" if reply.permanent else "deferred")


def _mark(message: bytes, junk: bool) -> bytes:
    """Without rspamd: the incoming ``X-Spam-*`` fields removed, and
    ``X-Spam-Flag: YES`` when another check sends the message to Junk."""
    message, _ = hdrs.remove(message, lambda f: f.lname in rspamdmod.SPAM_FIELDS)
    return (hdrs.fold("X-Spam-Flag", ["YES"]) + message) if junk else message


__all__ = ["AuthPolicy", "DataOutcome", "DefenceSettings", "Defences", "ConnectionDefences", "DnsblSettings",
           "Envelope", "RcptOutcome", "RspamdSettings"]
