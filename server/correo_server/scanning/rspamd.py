"""Spam and malware scanning through rspamd's HTTP protocol (``/checkv2``).

The relay sends each port-25 message to rspamd at the end of DATA with the
envelope as request headers (``From``, one ``Rcpt`` per recipient, ``IP``,
``Helo``, ``Queue-Id``, ``MTA-Name``; ``Password`` when one is configured,
as rspamd's controller and proxy want), and maps the action rspamd reports
(:func:`decide`, pure):

=====================================  ==========================================
rspamd says                            correo does
=====================================  ==========================================
``reject``                             ``550 5.7.1`` (rspamd's SMTP message if any)
a virus symbol (``*_VIRUS`` or listed) ``550 5.7.1``, whatever the action
``soft reject``                        ``451 4.7.1``
``greylist``                           ``451 4.7.1``
``add header``, ``rewrite subject``    delivered to Junk with ``X-Spam-*`` headers
                                       (and the new ``Subject:`` rspamd gives)
``no action``                          delivered, with ``X-Spam-*`` headers
rspamd unreachable, slow, or answering ``451 4.7.1`` (``onFailure: tempfail``, the
nonsense                               default) or delivered unscanned (``accept``)
=====================================  ==========================================

Virus symbols: rspamd's antivirus and external-services modules name theirs
``CLAM_VIRUS``, ``SOPHOS_VIRUS``, ``ICAP_VIRUS``...; any symbol ending in
``_VIRUS`` counts, and so do the names a site adds.  The ``X-Spam-*`` fields a
message arrives with are removed before ours are added, so that nobody
outside can file mail into or out of Junk; the fields rspamd asks to add or
remove (its ``milter`` block) are honoured.

:class:`RspamdClient` is the I/O edge (aiohttp, one connection pool per
relay); :func:`apply` rewrites the message (pure).
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .. import logs
from ..mailauth import headers as hdrs
from ..replytext import printable
from ..wire.replies import Reply

log = logs.get(__name__)

FAIL_MODES = ("tempfail", "accept")
SPAM_FIELDS = ("x-spam", "x-spam-flag", "x-spam-status", "x-spam-score", "x-spam-level", "x-spam-action",
               "x-spam-symbols", "x-spamd-result", "x-spamd-bar", "x-rspamd-action", "x-rspamd-score")


@dataclass(frozen=True)
class RspamdSettings:
    url: str  # http://rspamd:11333 (the normal worker) or the controller/proxy
    password: str = ""
    timeout_seconds: float = 20.0
    on_failure: str = "tempfail"  # or "accept"
    virus_symbols: tuple[str, ...] = ()  # more symbol names that mean "virus"

    def __post_init__(self) -> None:
        if self.on_failure not in FAIL_MODES:
            raise ValueError(f"on_failure must be tempfail or accept, not {self.on_failure!r}")


@dataclass(frozen=True)
class ScanResult:
    action: str  # as rspamd said it; "unavailable" when it could not be asked
    reply: Reply | None  # refusal or deferral; None: deliver
    junk: bool = False
    score: float = 0.0
    required: float = 0.0
    symbols: tuple[str, ...] = ()
    viruses: tuple[str, ...] = ()
    subject: str | None = None  # the Subject rspamd wants (rewrite subject)
    add_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    error: str = ""
    scanned: bool = True

    @property
    def reason(self) -> str:
        """For metrics: virus, spam, spam_tempfail, junk, clean, unavailable."""
        if not self.scanned:
            return "unavailable"
        if self.viruses:
            return "virus"
        if self.reply is not None:
            return "spam" if self.reply.permanent else "spam_tempfail"
        return "junk" if self.junk else "clean"


def is_virus_symbol(name: str, extra: tuple[str, ...] = ()) -> bool:
    return name.upper().endswith("_VIRUS") or name in extra


def _message(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, dict):
        text = messages.get("smtp_message")
        if isinstance(text, str) and text.strip():
            return printable(text.strip(), 200)
    return ""


def _milter(body: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    milter = body.get("milter")
    adds: list[tuple[str, str]] = []
    removes: list[str] = []
    if not isinstance(milter, dict):
        return (), ()
    for name, spec in (milter.get("add_headers") or {}).items():
        items = spec if isinstance(spec, list) else [spec]
        for item in items:
            value = item.get("value") if isinstance(item, dict) else item
            if isinstance(value, str) and hdrs.valid_name(name):
                adds.append((name, value))
    for name in (milter.get("remove_headers") or {}):
        removes.append(str(name))
    return tuple(adds), tuple(removes)


def decide(body: Any, settings: RspamdSettings) -> ScanResult:
    """What an rspamd ``/checkv2`` reply means for the message."""
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        return unavailable("rspamd answered without an action", settings)
    action = body["action"].lower()
    symbols_obj = body.get("symbols") if isinstance(body.get("symbols"), dict) else {}
    symbols = tuple(sorted(symbols_obj))
    viruses = tuple(s for s in symbols if is_virus_symbol(s, settings.virus_symbols))
    try:
        score = float(body.get("score", 0.0))
        required = float(body.get("required_score", 0.0))
    except (TypeError, ValueError):
        score = required = 0.0
    adds, removes = _milter(body)
    base = dict(action=action, score=score, required=required, symbols=symbols, viruses=viruses,
                add_headers=adds, remove_headers=removes)
    said = _message(body)
    if viruses:
        return ScanResult(reply=Reply(550, "5.7.1", printable(
            f"Message refused: it contains a virus ({', '.join(viruses)})"), "virus"), **base)
    if action == "reject":
        return ScanResult(reply=Reply(550, "5.7.1", said or "Message refused as spam", "spam"), **base)
    if action == "soft reject":
        return ScanResult(reply=Reply(451, "4.7.1", said or "Message deferred by the spam filter; try again later",
                                      "spam_soft_reject"), **base)
    if action == "greylist":
        return ScanResult(reply=Reply(451, "4.7.1", "Greylisted; please try again later", "greylist"), **base)
    if action in ("add header", "rewrite subject"):
        subject = body.get("subject") if action == "rewrite subject" else None
        return ScanResult(reply=None, junk=True, subject=subject if isinstance(subject, str) else None, **base)
    if action == "no action":
        return ScanResult(reply=None, **base)
    return unavailable(f"rspamd answered an unknown action {action!r}", settings)


def unavailable(error: str, settings: RspamdSettings) -> ScanResult:
    """rspamd could not be asked: what the fail mode says."""
    if settings.on_failure == "accept":
        return ScanResult(action="unavailable", reply=None, error=error, scanned=False)
    return ScanResult(action="unavailable", reply=Reply(451, "4.7.1", "Content scanner unavailable; try again later",
                                                        "scanner_unavailable"), error=error, scanned=False)


def spam_headers(result: ScanResult, *, junk: bool | None = None) -> list[bytes]:
    """The ``X-Spam-*`` fields for a scanned message (``X-Spam-Flag: YES``
    marks mail for Junk, as SpamAssassin and rspamd's milter do); ``junk``
    overrides the flag when another check (DMARC quarantine) decided it."""
    spam = result.junk or result.reply is not None
    flag = spam if junk is None else junk
    if not result.scanned:
        return [hdrs.fold("X-Spam-Flag", ["YES"])] if flag else []
    fields = [
        hdrs.fold("X-Spam-Flag", ["YES" if flag else "NO"]),
        hdrs.fold("X-Spam-Status", [f"{'Yes' if spam else 'No'}, score={result.score:.2f}",
                                    f"required={result.required:.2f}"], separator=""),
        hdrs.fold("X-Spam-Action", [result.action]),
    ]
    if result.symbols:
        fields.append(hdrs.fold("X-Spam-Symbols", [printable(s, 100) for s in result.symbols[:100]], separator=","))
    return fields


def apply(message: bytes, result: ScanResult, *, junk: bool | None = None) -> bytes:
    """The message to deliver: incoming ``X-Spam-*`` and the fields rspamd
    names removed, ours and rspamd's added on top, the subject rewritten when
    rspamd asks.  ``junk``: see :func:`spam_headers`."""
    drop = set(SPAM_FIELDS) | {n.lower() for n in result.remove_headers}
    if result.subject is not None:
        drop.add("subject")
    fields, rest = hdrs.split(message)
    kept = [f for f in fields if f.lname not in drop]
    top = spam_headers(result, junk=junk)
    top += [f"{name}: {printable(value, 900)}\r\n".encode("utf-8") for name, value in result.add_headers]
    if result.subject is not None:
        top.append(f"Subject: {printable(result.subject, 900)}\r\n".encode("utf-8"))
    if not top and len(kept) == len(fields):
        return message
    return b"".join(top) + hdrs.join(kept, rest)


@dataclass
class Envelope:
    sender: str
    recipients: list[str]
    ip: str = ""
    helo: str = ""
    queue_id: str = ""
    hostname: str = ""  # ours, as MTA-Name
    user: str = ""  # the authenticated user, if any
    extra: dict[str, str] = field(default_factory=dict)


class RspamdClient:
    """Asks rspamd about messages (one aiohttp session, made in the loop)."""

    def __init__(self, settings: RspamdSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self.url = settings.url.rstrip("/") + "/checkv2"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_seconds),
                connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _headers(self, envelope: Envelope) -> list[tuple[str, str]]:
        out = [("From", envelope.sender or "<>")]
        out += [("Rcpt", r) for r in envelope.recipients]
        for name, value in (("IP", envelope.ip), ("Helo", envelope.helo), ("Queue-Id", envelope.queue_id),
                            ("MTA-Name", envelope.hostname), ("User", envelope.user)):
            if value:
                out.append((name, printable(value, 900)))
        if self.settings.password:
            out.append(("Password", self.settings.password))
        out += list(envelope.extra.items())
        return out

    async def check(self, message: bytes, envelope: Envelope) -> ScanResult:
        """Scan; never raises for rspamd's failures (they become the fail mode)."""
        try:
            async with self._client().post(self.url, data=message, headers=self._headers(envelope)) as response:
                text = await response.read()
                if response.status != 200:
                    snippet = text[:200].decode("utf-8", "replace")
                    raise _Unavailable(f"rspamd answered HTTP {response.status}: {snippet}")
            try:
                body = json.loads(text)
            except ValueError:
                raise _Unavailable("rspamd answered something that is not JSON") from None
            result = decide(body, self.settings)
        except _Unavailable as exc:
            result = unavailable(str(exc), self.settings)
        except asyncio.TimeoutError:  # before ClientError: aiohttp's timeouts are both
            result = unavailable(f"rspamd at {self.settings.url} did not answer within "
                                 f"{self.settings.timeout_seconds:g} s", self.settings)
        except (aiohttp.ClientError, OSError) as exc:
            result = unavailable(f"cannot reach rspamd at {self.settings.url}: {str(exc) or type(exc).__name__}",
                                 self.settings)
        if not result.scanned:
            log.warning("rspamd_unavailable", error=result.error, fail_mode=self.settings.on_failure,
                        queue_id=envelope.queue_id)
        return result


class _Unavailable(Exception):
    pass
