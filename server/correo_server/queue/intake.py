"""What enters the queue: recipients expanded, the message written to the spool.

Used by the LMTP listener (:mod:`.lmtp_in`) for messages the relay hands over
and by the runner for the notices the queue writes itself.  Recipients in
hosted domains are expanded here, once, with the directory as it is at
enqueue time (aliases to their mailbox, forwards to remote addresses, the
local copy when ``keepCopy``); an unknown hosted address is refused
(``550 5.1.1``).  Addresses outside hosted domains are kept as given.

A message the relay hands over with a message key (``XDELIVERY-KEY``,
:mod:`correo_server.deliverykeys`) that a message still in the spool has is
the client's second attempt at it (the relay answered ``451`` because the
queue died before saying ``250``): it is not spooled again, and the reply
names the first copy.  The key goes on with the message, into the
delivery keys the mailstore checks.

The message belongs to a hosted domain (retry policy, smarthost, status
figures), chosen here by :func:`.ownership.owning_domain`: the sender's when
it is hosted, else the first hosted recipient's, else that of the mailbox
whose forward or notice made it, else the first configured domain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import logs
from ..config import ServerConfig
from ..directory import Directory
from ..wire.replies import Reply
from .clock import Clock
from .ownership import domain_of, owning_domain
from .records import Envelope, Message, QueueState, Rcpt
from .spool import Spool

log = logs.get(__name__)


@dataclass(frozen=True)
class Refusal:
    reply: Reply  # 550 5.1.1 <x@example.com>: no such mailbox here


def expand(cfg: ServerConfig, directory: Directory, address: str) -> list[Rcpt] | Refusal:
    """Where mail for ``address`` goes, or why it is refused."""
    domain = domain_of(address)
    if not domain:
        return Refusal(Reply(553, "5.1.3", f"<{address}>: recipient address must include a domain"))
    if not cfg.is_hosted(domain):
        return [Rcpt(address, address, False)]
    found = directory.expand(address)
    if found is None:
        return Refusal(Reply(550, "5.1.1", f"<{address}>: Recipient address rejected: no such mailbox here"))
    out = [Rcpt(mailbox, address, True) for mailbox in found.local]
    # A forward to an unknown address of a hosted domain still goes to the
    # mailstore, which refuses it (and the sender hears of it).
    out += [Rcpt(target, address, cfg.is_hosted(domain_of(target))) for target in found.remote]
    if not out:  # forwards that only lead back to themselves: keep the mail
        entry = directory.lookup(address)
        out = [Rcpt(entry.address if entry else address, address, True)]
    return out


def dedupe(expansions: list[list[Rcpt]]) -> tuple[Rcpt, ...]:
    seen: set[tuple[str, bool]] = set()
    out = []
    for group in expansions:
        for r in group:
            key = (r.address.lower(), r.local)
            if key not in seen:
                seen.add(key)
                out.append(r)
    return tuple(out)


class Intake:
    def __init__(self, cfg: ServerConfig, directory: Callable[[], Directory], spool: Spool, state: QueueState,
                 clock: Clock, on_new: Callable[[Message], None]) -> None:
        self.cfg = cfg
        self.directory = directory
        self.spool = spool
        self.state = state
        self.clock = clock
        self.on_new = on_new
        self._by_key: dict[str, str] = {}  # message key → id, for messages in the spool
        self._keys_built = False

    def expand(self, address: str) -> list[Rcpt] | Refusal:
        return expand(self.cfg, self.directory(), address)

    def owner(self, sender: str, recipients: tuple[Rcpt, ...], created_by: str = "") -> tuple[str, str]:
        """(hosted domain the message belongs to, hosted sending mailbox);
        ``created_by``: the domain of the message a notice is about."""
        domain = owning_domain(self.cfg, sender, recipients, created_by)
        mailbox = ""
        if sender and self.cfg.is_hosted(domain_of(sender)):
            entry = self.directory().lookup(sender)
            mailbox = entry.address if entry else ""
        return (domain.name if domain is not None else ""), mailbox

    def holding(self, key: str) -> Message | None:
        """The message in the spool that came with this message key, if any."""
        if not self._keys_built:  # the spool as recovered at start
            self._by_key.update((m.env.key, m.id) for m in self.state if m.env.key)
            self._keys_built = True
        mid = self._by_key.get(key)
        msg = self.state.get(mid) if mid is not None else None
        if msg is not None and msg.env.key == key:
            return msg
        self._by_key.pop(key, None)
        return None

    def _remember_key(self, msg: Message) -> None:
        if len(self._by_key) > 2 * len(self.state.messages) + 1000:  # forget messages gone since
            self._by_key = {k: mid for k, mid in self._by_key.items() if self.state.get(mid) is not None}
        self._by_key[msg.env.key] = msg.id

    async def adopt(self, env: Envelope, data: bytes) -> tuple[Message | None, bool]:
        """Spool a message a leaving replica hands over (:mod:`.handover`):
        its envelope as it was (id, arrival, owner, key) with its state there
        (``env.handed``), durably, before the caller acknowledges it.
        Returns (the message, whether it is new here): one this spool holds
        already (the hand-over is repeated when its acknowledgement was lost)
        is not spooled twice."""
        held = self.state.get(env.id)
        if held is not None or self.spool.exists(env.id):
            return held, False  # None: here and finished already
        await self.spool.store(env, data)
        msg = Message.arrived(env)
        self.state.add(msg)
        if env.key:
            self.holding(env.key)  # the map is built before this message joins it
            self._remember_key(msg)
        self.on_new(msg)
        return msg, True

    async def accept(self, sender: str, recipients: tuple[Rcpt, ...], data: bytes, *, smtputf8: bool = False,
                     body: str = "7BIT", msg_id: str | None = None, created_by: str = "", notice: str = "",
                     about: str = "", schedule: bool = True, key: str = "", unverified: str = "") -> Message:
        """Spool a message durably and hand it to the runner.  Raises OSError
        (``SpoolFull`` when space is short) with nothing acknowledged.
        ``created_by``: for a notice, the domain of the message it is about;
        ``key``: the relay's message key (a message in the spool with the
        same key is returned instead of spooling a second copy);
        ``unverified``: the relay's verdict that the sender failed SPF or DMARC."""
        if msg_id and self.state.get(msg_id) is not None:
            return self.state.messages[msg_id]  # written before a crash: not twice
        if key and (held := self.holding(key)) is not None:
            log.info("message_already_queued", queue_id=held.id, key=key)
            return held  # the client's second attempt: the first copy is still here
        now = self.clock.now()
        owner, mailbox = self.owner(sender, recipients, created_by)
        env = Envelope(id=msg_id or self.spool.new_id(now), sender=sender, recipients=recipients, arrival=now,
                       size=len(data), domain=owner, sender_mailbox=mailbox, smtputf8=smtputf8, body=body,
                       notice=notice, about=about, key=key, unverified=unverified)
        await self.spool.store(env, data)
        msg = Message.fresh(env)
        self.state.add(msg)
        if key:
            self._remember_key(msg)
        if schedule:
            self.on_new(msg)
        return msg
