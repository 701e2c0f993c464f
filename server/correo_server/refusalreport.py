"""What the relay refused, by reason and domain: counted in the relay, kept by the queue.

The relay refuses mail at the protocol level (the defences, the recipient
checks of :mod:`.backscatter`).  An administrator wants to see those
refusals on the MailDomain (``status.incoming``: how many per reason, the
last one), across every relay replica and across restarts.  The relay is
stateless, so:

1. each refusal whose reason this module knows (:data:`CATEGORIES`) is
   recorded by the relay in a :class:`Tally` per hosted domain
   (:class:`RefusalLog`): the recipient's domain when there is one, else
   the sender's when it is ours, else the relay's first domain.  The
   relay's ``/status`` shows what it counted since it started
   (``refused``), and ``correo_relay_filter_refusals_total{reason}`` counts
   them for Prometheus;
2. every few seconds the relay sends what it counted since the last report
   to the queue's side port (``POST /refusals``, :class:`Reporter`), signed
   with a key derived from the domain's SRS secret, which only the relay
   and the queue mount (:func:`report_key`).  What cannot be sent is kept
   (as counts: memory stays bounded) and sent with the next report;
3. the queue adds the reports up (:class:`RefusalStore`), keeps them in
   ``<spool>/refusals.json`` (written atomically, at most every few
   seconds, and when it stops), and publishes them in its ``/status``
   (``refusals``), where the control plane reads them for every MailDomain
   (``correo_operator.status``).

Reasons (the ``reason`` label and the keys of ``refusedByReason``): spf,
dmarc, own_domain (``ownDomain`` in status), spam (reject, soft reject,
greylist), virus, dnsbl, quota, srs, recipient (unknown, suspended, or
forwarding to one), tempfail (a check that could not be made).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import aiohttp
from aiohttp import web

from . import logs
from .config import ServerConfig
from .srs import load_keys
from .statusdoc import rfc3339
from .wire.replies import Reply

log = logs.get(__name__)

# Reply.reason → the reason shown to administrators.
CATEGORIES = {
    "spf_fail": "spf", "dmarc_reject": "dmarc", "own_domain": "own_domain",
    "spam": "spam", "spam_soft_reject": "spam", "greylist": "spam", "virus": "virus", "dnsbl": "dnsbl",
    "over_quota": "quota", "over_quota_size": "quota", "srs_invalid": "srs",
    "unknown_recipient": "recipient", "mailbox_disabled": "recipient", "forward_broken": "recipient",
    "spf_temperror": "tempfail", "dmarc_temperror": "tempfail", "own_domain_temperror": "tempfail",
    "scanner_unavailable": "tempfail",
}
REASONS = ("spf", "dmarc", "own_domain", "spam", "virus", "dnsbl", "quota", "srs", "recipient", "tempfail")
METRIC = "relay_filter_refusals_total"
REPORT_SECONDS = 2.0
SAVE_SECONDS = 5.0
SIGNATURE_HEADER = "X-Correo-Signature"


def category(reason: str | None) -> str | None:
    return CATEGORIES.get(reason or "")


@dataclass
class Tally:
    """Refusals of one domain: counts by reason, the last one."""

    by_reason: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] | None = None  # time, reason, reply, sender, recipient, client

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def add(self, reason: str, last: dict[str, str] | None, count: int = 1) -> None:
        self.by_reason[reason] = self.by_reason.get(reason, 0) + count
        if last is not None and (self.last is None or last.get("time", "") >= self.last.get("time", "")):
            self.last = last

    def merge(self, other: "Tally") -> None:
        for reason, count in other.by_reason.items():
            self.add(reason, None, count)
        if other.last is not None:
            self.add_last(other.last)

    def add_last(self, last: dict[str, str]) -> None:
        if self.last is None or last.get("time", "") >= self.last.get("time", ""):
            self.last = last

    def to_json(self) -> dict[str, Any]:
        return {"refused": self.total, "byReason": dict(sorted(self.by_reason.items())), "last": self.last}

    @classmethod
    def from_json(cls, data: Any) -> "Tally":
        if not isinstance(data, dict):
            raise ValueError("a tally is an object")
        by_reason = {str(k): int(v) for k, v in (data.get("byReason") or {}).items()
                     if k in REASONS and int(v) >= 0}
        last = data.get("last")
        if last is not None:
            if not isinstance(last, dict):
                raise ValueError("last is an object")
            last = {k: str(last.get(k, ""))[:300] for k in ("time", "reason", "reply", "sender", "recipient", "client")}
        return cls(by_reason, last)


def tallies_to_json(tallies: dict[str, Tally]) -> dict[str, Any]:
    return {domain: t.to_json() for domain, t in sorted(tallies.items())}


def tallies_from_json(data: Any) -> dict[str, Tally]:
    if not isinstance(data, dict):
        raise ValueError("expected an object of domains")
    return {str(domain).lower(): Tally.from_json(t) for domain, t in data.items()}


def report_key(cfg: ServerConfig) -> bytes | None:
    """The key that signs reports: derived from the first domain's SRS secret
    (None when no domain has one: the relay then keeps its counts to itself)."""
    for domain in cfg.domains:
        if domain.srs_key_file:
            try:
                keys = load_keys(cfg.path(domain.srs_key_file))
            except (OSError, ValueError):
                continue
            return hmac.new(keys[0], b"correo refusal report", hashlib.sha256).digest()
    return None


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


# -- the relay's side ----------------------------------------------------------------

class RefusalLog:
    """What this relay refused: per domain since it started (for its
    ``/status``), and what is still to be reported to the queue."""

    def __init__(self, cfg: ServerConfig, *, clock: Callable[[], float] = time.time, metrics=None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.since_start: dict[str, Tally] = {}
        self.pending: dict[str, Tally] = {}

    def _domain(self, recipient: str, sender: str) -> str:
        for address in (recipient, sender):
            hosted = self.cfg.domain_for(address.rpartition("@")[2]) if "@" in address else None
            if hosted is not None:
                return hosted.name
        return self.cfg.domains[0].name if self.cfg.domains else ""

    def record(self, reply: Reply, *, sender: str = "", recipient: str = "", client: str = "") -> str | None:
        """Count a refusal when its reason is one of ours; returns the reason."""
        reason = category(reply.reason)
        if reason is None:
            return None
        if self.metrics is not None:
            self.metrics.inc(METRIC, reason=reason)
        domain = self._domain(recipient, sender)
        if not domain:
            return reason
        last = {"time": rfc3339(self.clock()), "reason": reason, "reply": str(reply)[:300], "sender": sender[:300],
                "recipient": recipient[:300], "client": client}
        for book in (self.since_start, self.pending):
            book.setdefault(domain, Tally()).add(reason, last)
        return reason

    def take(self) -> dict[str, Tally]:
        """What is to be reported, now no longer pending."""
        pending, self.pending = self.pending, {}
        return pending

    def put_back(self, pending: dict[str, Tally]) -> None:
        """A report that could not be sent: its counts wait for the next one."""
        for domain, tally in pending.items():
            self.pending.setdefault(domain, Tally()).merge(tally)


class Reporter:
    """Sends the relay's new refusals to the queue every few seconds."""

    def __init__(self, book: RefusalLog, url: str, key: bytes, *, interval: float = REPORT_SECONDS) -> None:
        self.book = book
        self.url = url.rstrip("/") + "/refusals"
        self.key = key
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    @classmethod
    def from_config(cls, cfg: ServerConfig, book: RefusalLog) -> "Reporter | None":
        listen = cfg.relay.queue_http
        key = report_key(cfg)
        if listen is None or key is None:
            return None
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else ("::1" if listen.host == "::" else listen.host)
        host = f"[{host}]" if ":" in host else host
        return cls(book, f"http://{host}:{listen.port}", key)

    async def flush(self) -> bool:
        pending = self.book.take()
        if not pending:
            return True
        body = json.dumps({"domains": tallies_to_json(pending)}, sort_keys=True).encode()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._session.post(self.url, data=body, headers={
                    "Content-Type": "application/json", SIGNATURE_HEADER: sign(self.key, body)}) as rsp:
                if rsp.status != 204:
                    raise ValueError(f"HTTP {rsp.status}: {(await rsp.text())[:200]}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            self.book.put_back(pending)
            if not self._failing:
                log.warning("refusal_report_failed", url=self.url, error=str(exc) or type(exc).__name__)
            self._failing = True
            return False
        self._failing = False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()  # the last counts before the relay goes
        if self._session is not None:
            await self._session.close()


# -- the queue's side ----------------------------------------------------------------

class RefusalStore:
    """The relays' reports added up, kept in a file next to the spool."""

    def __init__(self, path: str | os.PathLike[str], key: bytes | None) -> None:
        self.path = Path(path)
        self.key = key
        self.tallies: dict[str, Tally] = {}
        self._dirty = False
        self._saver: asyncio.Task | None = None
        try:
            self.tallies = tallies_from_json(json.loads(self.path.read_text()).get("domains", {}))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("refusals_file_unreadable", path=str(self.path), error=str(exc), effect="counting from zero")

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> "RefusalStore":
        return cls(cfg.path(cfg.queue.spool_dir) / "refusals.json", report_key(cfg))

    def add(self, report: dict[str, Tally]) -> None:
        for domain, tally in report.items():
            self.tallies.setdefault(domain, Tally()).merge(tally)
        self._dirty = True

    def to_json(self) -> dict[str, Any]:
        return tallies_to_json(self.tallies)

    def save(self) -> None:
        if not self._dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"domains": self.to_json()}, sort_keys=True))
        os.replace(tmp, self.path)
        self._dirty = False

    async def _save_later(self) -> None:
        await asyncio.sleep(SAVE_SECONDS)
        self._saver = None
        try:
            await asyncio.to_thread(self.save)
        except OSError as exc:
            log.warning("refusals_file_not_saved", path=str(self.path), error=str(exc))

    async def handle(self, request: web.Request) -> web.Response:
        """``POST /refusals`` from a relay."""
        body = await request.read()
        given = request.headers.get(SIGNATURE_HEADER, "")
        if self.key is None or not hmac.compare_digest(sign(self.key, body), given):
            return web.json_response({"error": "unsigned or wrongly signed refusal report"}, status=403)
        try:
            report = tallies_from_json(json.loads(body).get("domains"))
        except (ValueError, AttributeError, TypeError) as exc:
            return web.json_response({"error": f"not a refusal report: {exc}"}, status=400)
        self.add(report)
        if self._saver is None:
            self._saver = asyncio.ensure_future(self._save_later())
        return web.Response(status=204)

    async def close(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            self._saver = None
        try:
            self.save()
        except OSError as exc:
            log.warning("refusals_file_not_saved", path=str(self.path), error=str(exc))
