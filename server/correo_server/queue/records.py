"""What the queue knows about each message, and the events that change it.

A spooled message is an immutable :class:`Envelope` (written once, next to the
message bytes, by :mod:`.spool`) plus one mutable :class:`Recipient` record per
recipient: its state (pending, deferred with the next attempt time, delivered,
bounced) and its history of attempts (time, server, reply).

Every change of state is an *event* (a small JSON-able dict) that
:mod:`.spool` appends to its journal before anything depends on it, and that
:meth:`QueueState.apply` applies in memory.  Recovery after a crash is the same
code path: load the last snapshot, apply the journal's events again.  Events
also feed the cumulative :class:`Figures` (delivered, bounced, notices sent,
last errors, last bounces) that ``/status`` publishes, so that those survive a
restart too.  Events carry what the figures need (domain, sender, recipient),
so they can be counted even when the message they belong to is gone.

Nothing here does I/O or reads a clock: times come in with the events.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..backscatter.verdict import owes_notices
from ..statusdoc import Bounce, LastError, rfc3339

PENDING = "pending"
DEFERRED = "deferred"
DELIVERED = "delivered"
BOUNCED = "bounced"
FINAL = frozenset({DELIVERED, BOUNCED})
STATES = (PENDING, DEFERRED, DELIVERED, BOUNCED)

MAX_HISTORY = 200  # attempts kept per recipient (the count is kept separately)
MAX_LAST_BOUNCES = 20
MAX_LAST_ERRORS = 20


@dataclass(frozen=True)
class Rcpt:
    """One recipient as spooled: where it goes, and what the client asked for."""

    address: str  # the address delivered to (a mailbox, or a remote address)
    original: str = ""  # the RCPT TO the queue received (an alias, a forwarding mailbox...)
    local: bool = False  # True: goes to the mailstore over LMTP

    def to_json(self) -> list:
        return [self.address, self.original, self.local]

    @classmethod
    def from_json(cls, data: list) -> "Rcpt":
        return cls(str(data[0]), str(data[1]), bool(data[2]))


@dataclass(frozen=True)
class Envelope:
    """Everything about a message except its bytes and its recipients' state."""

    id: str
    sender: str  # "" is the null sender <>
    recipients: tuple[Rcpt, ...]
    arrival: float
    size: int
    domain: str = ""  # the hosted domain the message belongs to (retry policy, smarthost)
    sender_mailbox: str = ""  # the hosted mailbox that sent it, if any
    smtputf8: bool = False
    body: str = "7BIT"  # or "8BITMIME"
    notice: str = ""  # "delayed" / "failed" when this message is a notice...
    about: str = ""  # ...about this queue id
    key: str = ""  # the relay's message key (XDELIVERY-KEY), if any: correo_server.deliverykeys
    unverified: str = ""  # "spf"/"dmarc": the sender failed it; never sent a notice (backscatter.verdict)
    # Handed over by a leaving replica (queue.handover): its state there
    # ({"from": replica, "state": Message.to_json()}), written with the
    # envelope so that the record alone brings the history along.
    handed: dict | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        out = {
            "id": self.id, "sender": self.sender, "arrival": self.arrival, "size": self.size,
            "domain": self.domain, "senderMailbox": self.sender_mailbox, "smtputf8": self.smtputf8,
            "body": self.body, "notice": self.notice, "about": self.about,
            "recipients": [r.to_json() for r in self.recipients],
            **({"unverified": self.unverified} if self.unverified else {}),
        }
        if self.key:
            out["key"] = self.key
        if self.handed:
            out["handed"] = self.handed
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Envelope":
        return cls(
            id=str(data["id"]), sender=str(data["sender"]), arrival=float(data["arrival"]),
            size=int(data["size"]), domain=str(data.get("domain", "")),
            sender_mailbox=str(data.get("senderMailbox", "")), smtputf8=bool(data.get("smtputf8", False)),
            body=str(data.get("body", "7BIT")), notice=str(data.get("notice", "")),
            about=str(data.get("about", "")), key=str(data.get("key", "")),
            unverified=str(data.get("unverified", "")),
            recipients=tuple(Rcpt.from_json(r) for r in data["recipients"]),
            handed=data["handed"] if isinstance(data.get("handed"), dict) else None,
        )


@dataclass
class Attempt:
    time: float
    server: str  # "mx1.example.org[192.0.2.1]:25", "mailstore[127.0.0.1]:2425"
    reply: str  # "451 4.7.1 greylisted"

    def to_json(self) -> list:
        return [self.time, self.server, self.reply]

    @classmethod
    def from_json(cls, data: list) -> "Attempt":
        return cls(float(data[0]), str(data[1]), str(data[2]))


@dataclass
class Recipient:
    rcpt: Rcpt
    state: str = PENDING
    next_attempt: float = 0.0  # when pending/deferred: due time
    attempts: list[Attempt] = field(default_factory=list)
    attempt_count: int = 0
    destination: str = ""  # last destination tried ("mx1.example.org", "mailstore", ...)
    remote_mta: str = ""  # last remote host that answered
    reply: str = ""  # last reply, or the reason of a bounce
    final_time: float = 0.0
    notified: bool = False  # a failure notice went out (or none is owed)
    # Not persisted: a delivery job holds this recipient right now.
    busy: bool = field(default=False, compare=False)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_json(self) -> dict:
        return {
            "state": self.state, "next": self.next_attempt, "n": self.attempt_count,
            "attempts": [a.to_json() for a in self.attempts], "dest": self.destination,
            "mta": self.remote_mta, "reply": self.reply, "final": self.final_time, "notified": self.notified,
        }

    @classmethod
    def from_json(cls, rcpt: Rcpt, data: dict) -> "Recipient":
        return cls(
            rcpt=rcpt, state=str(data["state"]), next_attempt=float(data.get("next", 0.0)),
            attempts=[Attempt.from_json(a) for a in data.get("attempts", [])],
            attempt_count=int(data.get("n", 0)), destination=str(data.get("dest", "")),
            remote_mta=str(data.get("mta", "")), reply=str(data.get("reply", "")),
            final_time=float(data.get("final", 0.0)), notified=bool(data.get("notified", False)),
        )


@dataclass
class Message:
    env: Envelope
    rcpts: list[Recipient]
    delayed_notified: bool = False
    # Not persisted: scheduling bookkeeping of the runner.
    notice_busy: bool = field(default=False, compare=False)
    notice_retry_at: float = field(default=0.0, compare=False)
    heap_due: float | None = field(default=None, compare=False)
    removing: bool = field(default=False, compare=False)

    @classmethod
    def fresh(cls, env: Envelope) -> "Message":
        return cls(env, [Recipient(r, next_attempt=env.arrival) for r in env.recipients])

    @classmethod
    def arrived(cls, env: Envelope) -> "Message":
        """A message as its record brings it: fresh, or, handed over by a
        leaving replica, with the state it had there (attempts, each
        recipient's state, the delay notice already sent)."""
        if env.handed and isinstance(env.handed.get("state"), dict):
            return cls.from_json(dataclasses.replace(env, handed=None), env.handed["state"])
        return cls.fresh(env)

    @property
    def id(self) -> str:
        return self.env.id

    @property
    def busy(self) -> bool:
        return self.notice_busy or any(r.busy for r in self.rcpts)

    def complete(self) -> bool:
        """Nothing left to do: every recipient final, every failure reported."""
        return all(r.final and (r.state != BOUNCED or r.notified) for r in self.rcpts)

    def to_json(self) -> dict:
        return {"delayedNotified": self.delayed_notified, "rcpts": [r.to_json() for r in self.rcpts]}

    @classmethod
    def from_json(cls, env: Envelope, data: dict) -> "Message":
        states = data.get("rcpts", [])
        rcpts = [Recipient.from_json(r, states[i]) if i < len(states) else Recipient(r, next_attempt=env.arrival)
                 for i, r in enumerate(env.recipients)]
        return cls(env, rcpts, delayed_notified=bool(data.get("delayedNotified", False)))


# ---------------------------------------------------------------------------
# Events.  Builders keep the field names in one place.
# ---------------------------------------------------------------------------

def attempt_event(msg: Message, index: int, *, time: float, server: str, destination: str,
                  remote_mta: str, reply: str, state: str, next_attempt: float = 0.0) -> dict:
    env = msg.env
    return {
        "e": "attempt", "id": env.id, "i": index, "t": time, "server": server, "dest": destination,
        "mta": remote_mta, "reply": reply, "state": state, "next": next_attempt,
        # what the figures need even if the message is gone when this is replayed
        "dom": env.domain, "snd": env.sender_mailbox, "from": env.sender, "rcpt": env.recipients[index].address,
        "notice": bool(env.notice),
    }


def notice_event(msg: Message, kind: str, indices: list[int], *, time: float, notice_id: str) -> dict:
    return {"e": "notice", "id": msg.env.id, "kind": kind, "i": list(indices), "t": time, "nid": notice_id,
            "dom": msg.env.domain, "snd": msg.env.sender_mailbox}


def retry_event(msg_id: str, time: float) -> dict:
    return {"e": "retry", "id": msg_id, "t": time}


def delete_event(msg_id: str, time: float) -> dict:
    return {"e": "delete", "id": msg_id, "t": time}


def handed_event(msg_id: str, time: float, to: int) -> dict:
    """The message is in replica ``to``'s spool now (queue.handover): it leaves this one."""
    return {"e": "handed", "id": msg_id, "t": time, "to": to}


def figures_event(token: str, time: float, figures: dict) -> dict:
    """A leaving replica's cumulative figures, added to this one's once (``token``)."""
    return {"e": "figures", "id": token, "t": time, "add": figures}


def figures_handed_event(token: str, time: float, to: int) -> dict:
    """This replica's figures are counted by replica ``to`` from now on."""
    return {"e": "figures-handed", "id": token, "t": time, "to": to}


# ---------------------------------------------------------------------------
# Cumulative figures (what /status reports beyond the live queue).
# ---------------------------------------------------------------------------

@dataclass
class Tally:
    """Cumulative figures for one scope (all, or one hosted domain)."""

    delivered: int = 0
    bounced: int = 0
    delayed_notices: int = 0
    last_errors: "OrderedDict[str, LastError]" = field(default_factory=OrderedDict)  # oldest first
    last_bounces: list[Bounce] = field(default_factory=list)  # newest first

    def error(self, destination: str, error: str, time: float) -> None:
        self.last_errors.pop(destination, None)
        self.last_errors[destination] = LastError(destination=destination, error=error, time=rfc3339(time))
        while len(self.last_errors) > MAX_LAST_ERRORS:
            self.last_errors.popitem(last=False)

    def bounce(self, bounce: Bounce) -> None:
        self.bounced += 1
        self.last_bounces.insert(0, bounce)
        del self.last_bounces[MAX_LAST_BOUNCES:]

    def to_json(self) -> dict:
        return {"delivered": self.delivered, "bounced": self.bounced, "delayedNotices": self.delayed_notices,
                "lastErrors": list(self.last_errors.values()), "lastBounces": self.last_bounces}

    def absorb(self, other: "Tally") -> None:
        """Add another replica's figures (queue.handover)."""
        self.delivered += other.delivered
        self.bounced += other.bounced
        self.delayed_notices += other.delayed_notices
        merged = sorted([*self.last_errors.values(), *other.last_errors.values()], key=lambda e: e["time"])
        self.last_errors.clear()
        for e in merged:  # oldest first, one per destination, the newest kept
            self.last_errors.pop(e["destination"], None)
            self.last_errors[e["destination"]] = e
        while len(self.last_errors) > MAX_LAST_ERRORS:
            self.last_errors.popitem(last=False)
        self.last_bounces = sorted([*self.last_bounces, *other.last_bounces], key=lambda b: b["time"],
                                   reverse=True)[:MAX_LAST_BOUNCES]

    @classmethod
    def from_json(cls, data: dict) -> "Tally":
        t = cls(int(data.get("delivered", 0)), int(data.get("bounced", 0)), int(data.get("delayedNotices", 0)))
        for e in data.get("lastErrors", []):
            t.last_errors[e["destination"]] = LastError(**e)
        t.last_bounces = [Bounce(**b) for b in data.get("lastBounces", [])]
        return t


@dataclass
class SenderTally:
    delivered: int = 0
    bounced: int = 0
    delayed_notices: int = 0
    last_bounce: Bounce | None = None
    last_delivery: float | None = None

    def to_json(self) -> dict:
        return {"delivered": self.delivered, "bounced": self.bounced, "delayedNotices": self.delayed_notices,
                "lastBounce": self.last_bounce, "lastDelivery": self.last_delivery}

    def absorb(self, other: "SenderTally") -> None:
        self.delivered += other.delivered
        self.bounced += other.bounced
        self.delayed_notices += other.delayed_notices
        if other.last_bounce and (self.last_bounce is None or other.last_bounce["time"] > self.last_bounce["time"]):
            self.last_bounce = other.last_bounce
        if other.last_delivery and (self.last_delivery or 0) < other.last_delivery:
            self.last_delivery = other.last_delivery

    @classmethod
    def from_json(cls, data: dict) -> "SenderTally":
        lb = data.get("lastBounce")
        return cls(int(data.get("delivered", 0)), int(data.get("bounced", 0)), int(data.get("delayedNotices", 0)),
                   Bounce(**lb) if lb else None, data.get("lastDelivery"))


@dataclass
class Figures:
    total: Tally = field(default_factory=Tally)
    domains: dict[str, Tally] = field(default_factory=dict)
    senders: dict[str, SenderTally] = field(default_factory=dict)
    # Figures handed over by leaving replicas, by token (queue.handover): each
    # is added once, however often its hand-over is repeated.
    absorbed: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        t = self.total
        return not (t.delivered or t.bounced or t.delayed_notices or t.last_errors or t.last_bounces
                    or self.domains or self.senders)

    def absorb(self, token: str, other: "Figures") -> None:
        if token in self.absorbed:
            return
        self.absorbed = [*self.absorbed[-99:], token]
        self.total.absorb(other.total)
        for name, tally in other.domains.items():
            self.domains.setdefault(name, Tally()).absorb(tally)
        for name, st in other.senders.items():
            self.senders.setdefault(name, SenderTally()).absorb(st)

    def _scopes(self, domain: str) -> Iterator[Tally]:
        yield self.total
        if domain:
            yield self.domains.setdefault(domain, Tally())

    def record(self, event: dict) -> None:
        kind = event["e"]
        if kind == "attempt":
            self._attempt(event)
        elif kind == "figures":  # a leaving replica's, handed over (queue.handover)
            self.absorb(event["id"], Figures.from_json(event["add"]))
        elif kind == "figures-handed":  # ours went to another replica: counted there from now on
            self.total, self.domains, self.senders = Tally(), {}, {}
        elif kind == "notice" and event["kind"] == "delayed":
            for tally in self._scopes(event.get("dom", "")):
                tally.delayed_notices += 1
            if event.get("snd"):
                self.senders.setdefault(event["snd"], SenderTally()).delayed_notices += 1

    def _attempt(self, ev: dict) -> None:
        state, domain, sender = ev["state"], ev.get("dom", ""), ev.get("snd", "")
        when = float(ev["t"])
        if state != DELIVERED:
            for tally in self._scopes(domain):
                tally.error(ev["dest"] or "unknown", ev["reply"], when)
        if ev.get("notice"):
            return  # the queue's own notices are not mail people sent: errors only
        if state == DELIVERED:
            for tally in self._scopes(domain):
                tally.delivered += 1
            if sender:
                st = self.senders.setdefault(sender, SenderTally())
                st.delivered += 1
                st.last_delivery = when
        elif state == BOUNCED:
            bounce = Bounce(queueId=ev["id"], sender=ev.get("from", ""), recipient=ev.get("rcpt", ""),
                            reason=ev["reply"], time=rfc3339(when))
            for tally in self._scopes(domain):
                tally.bounce(bounce)
            if sender:
                st = self.senders.setdefault(sender, SenderTally())
                st.bounced += 1
                st.last_bounce = bounce

    def to_json(self) -> dict:
        return {"total": self.total.to_json(),
                "domains": {k: v.to_json() for k, v in self.domains.items()},
                "senders": {k: v.to_json() for k, v in self.senders.items()},
                **({"absorbed": list(self.absorbed)} if self.absorbed else {})}

    @classmethod
    def from_json(cls, data: dict) -> "Figures":
        return cls(Tally.from_json(data.get("total", {})),
                   {k: Tally.from_json(v) for k, v in data.get("domains", {}).items()},
                   {k: SenderTally.from_json(v) for k, v in data.get("senders", {}).items()},
                   [str(t) for t in data.get("absorbed", [])])


# ---------------------------------------------------------------------------
# The whole state.
# ---------------------------------------------------------------------------

class QueueState:
    """The live messages and the cumulative figures, changed only by events
    (and by :meth:`add` / :meth:`remove` for messages entering and leaving)."""

    def __init__(self, figures: Figures | None = None) -> None:
        self.messages: dict[str, Message] = {}
        self.figures = figures or Figures()

    def get(self, msg_id: str) -> Message | None:
        return self.messages.get(msg_id)

    def add(self, msg: Message) -> None:
        self.messages[msg.id] = msg

    def remove(self, msg_id: str) -> None:
        self.messages.pop(msg_id, None)

    def __iter__(self) -> Iterator[Message]:
        return iter(list(self.messages.values()))

    def __len__(self) -> int:
        return len(self.messages)

    def apply(self, ev: dict) -> Message | None:
        """Apply one event; returns the live message it concerns (None if gone)."""
        self.figures.record(ev)
        msg = self.messages.get(ev["id"])
        if msg is None:
            return None
        kind = ev["e"]
        if kind == "attempt":
            i = int(ev["i"])
            if not 0 <= i < len(msg.rcpts):
                return msg
            r = msg.rcpts[i]
            r.attempts.append(Attempt(float(ev["t"]), ev["server"], ev["reply"]))
            del r.attempts[:-MAX_HISTORY]
            r.attempt_count += 1
            r.destination, r.remote_mta, r.reply = ev["dest"], ev.get("mta", ""), ev["reply"]
            r.state = ev["state"]
            if r.state == DEFERRED:
                r.next_attempt = float(ev["next"])
            elif r.state in FINAL:
                r.final_time = float(ev["t"])
                # No notice is owed for the null sender (no loops), nor to a
                # sender that failed SPF or DMARC (no backscatter).
                r.notified = r.state == DELIVERED or not owes_notices(msg.env.sender, msg.env.unverified)
        elif kind == "notice":
            if ev["kind"] == "delayed":
                msg.delayed_notified = True
            else:
                for i in ev["i"]:
                    if 0 <= i < len(msg.rcpts):
                        msg.rcpts[i].notified = True
        elif kind == "retry":
            for r in msg.rcpts:
                if not r.final:
                    r.next_attempt = min(r.next_attempt, float(ev["t"]))
        elif kind in ("delete", "handed"):
            self.remove(msg.id)
            return None
        return msg

    def snapshot(self) -> dict[str, Any]:
        return {"figures": self.figures.to_json(),
                "messages": {m.id: m.to_json() for m in self.messages.values()}}
