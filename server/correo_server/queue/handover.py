"""Draining a leaving queue replica: each message goes, with its history, to
a replica that stays, and nothing is lost or done twice.

A replica whose ordinal is past ``queue.replicas`` is leaving
(:func:`correo_server.queuereplicas.leaving`: the StatefulSet is about to
shrink, or ``correo up`` found the spool of a replica it no longer runs).
It takes no mail (no LMTP listener: the relay's pool skips it), delivers
nothing, and :class:`Drainer` hands every message it holds to the replicas
that stay, over their LMTP, as a **transfer**:

``MAIL FROM:<sender> XTRANSFER=<n> [XDELIVERY-KEY=<key>]``, one ``RCPT`` per
recipient address, and as the data: ``n`` octets of the message's envelope
and state (JSON, base64 in lines of 76, each ending CRLF), then the message
bytes exactly as spooled.  The state is everything the queue knows
(:meth:`.records.Message.to_json`): each recipient's state, attempt
count and history, next attempt time, whether a failure notice went out,
and whether the delay notice was sent; the envelope keeps the queue id, the
original arrival time (the retry and give-up clock runs on), the owner and
the message key.  ``XTRANSFER`` is offered in the LHLO reply of every
replica (:mod:`.lmtp_in`).  The state part is signed (HMAC-SHA256 over it
and the message's digest) with a key every replica of the stack derives
from the domain's SRS secret (:func:`transfer_key`): a relay or a mailstore,
which may also speak LMTP to the queue, cannot hand over mail with a made-up
state (recipients not expanded, states set to delivered).

The receiver writes the record with the state inside it
(:attr:`.records.Envelope.handed`, one fsynced append: :meth:`.intake.Intake.adopt`)
and only then answers ``250``; it schedules the message where it was (a
deferred recipient at its next attempt, a delivered one never again, the
delay notice not a second time).  The sender removes its copy only after
that ``250`` (journal event ``handed``, committed before the record is
dropped).  A crash on either side repeats at most the transfer: the
receiver answers ``250`` for an id it holds already without a second copy,
and a message delivered and gone in between is delivered again at most
once more, which the mailstore's delivery keys absorb (the id, and the
key, are the same: :mod:`correo_server.deliverykeys`).

Last, what the replica counted (delivered, bounced, delay notices sent,
last errors and bounces, per sender) goes the same way, as a transfer of
figures only, so that the domain's cumulative figures do not drop when the
replica goes: the receiver adds them once (a repeated hand-over carries the
same token), the sender resets its own after the ``250``; and what the
relays reported to it as refused goes to a staying replica's ``/refusals``,
signed as the relays sign it.

Targets are taken in turn (a replica that refuses or cannot be reached: the
next one); when none takes a message the drainer waits (1 s, doubling to
30 s) and tries again: a leaving replica never gives mail up.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field

import aiohttp

from .. import deliverykeys, logs
from ..config import Listen
from ..metrics import Registry
from ..refusalreport import SIGNATURE_HEADER, RefusalStore, report_key, sign
from ..wire.client import Connection, Failure
from ..wire.data import data_lines
from .clock import Clock
from .records import Envelope, Figures, Message, QueueState, figures_handed_event, handed_event
from .spool import Spool

log = logs.get(__name__)

EXTENSION = "XTRANSFER"  # LHLO keyword and MAIL parameter: <n> octets of state before the message
VERSION = 1
MAX_STATE_BYTES = 4 * 1024 * 1024  # the state part of a transfer, at most (attempt history is trimmed to fit)
LINE = 76
WORKERS = 8  # messages handed over at once (the receivers fsync them together)


class TransferError(ValueError):
    """A transfer whose state part cannot be read."""


def transfer_key(cfg) -> bytes | None:
    """The key that signs transfers between the replicas of one stack:
    derived, as the relays' refusal reports' is, from the first domain's SRS
    secret (every replica has it); None when no domain has one."""
    key = report_key(cfg)
    return hmac.new(key, b"correo queue transfer", hashlib.sha256).digest() if key is not None else None


def _signature(key: bytes, doc: dict, data: bytes) -> str:
    body = json.dumps({k: v for k, v in doc.items() if k != "sig"}, separators=(",", ":"), sort_keys=True).encode()
    return hmac.new(key, body + hashlib.sha256(data).digest(), hashlib.sha256).hexdigest()


def _pack(doc: dict, data: bytes, key: bytes | None) -> bytes:
    if key is not None:
        doc = {**doc, "sig": _signature(key, doc, data)}
    return _lines(base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()))


def encode(msg: Message, data: bytes, *, replica: int | None, key: bytes | None = None) -> tuple[bytes, int]:
    """(the transfer's data, the length of its state part); signed with
    ``key`` (:func:`transfer_key`) when there is one."""
    state = msg.to_json()
    for keep in (None, 20, 1):  # a very long history is cut (the attempt count stays)
        if keep is not None:
            for r in state["rcpts"]:
                r["attempts"] = r["attempts"][-keep:]
        doc = {"v": VERSION, "from": replica, "env": {**msg.env.to_json(), "handed": None}, "state": state}
        prefix = _pack(doc, data, key)
        if len(prefix) <= MAX_STATE_BYTES:
            return prefix + data, len(prefix)
    raise TransferError("state too large to hand over")


def _lines(raw: bytes) -> bytes:
    return b"".join(raw[i:i + LINE] + b"\r\n" for i in range(0, len(raw), LINE))


def encode_figures(figures: dict, *, replica: int | None, key: bytes | None = None) -> tuple[bytes, int, str]:
    """(the data, its state part's length, the token) of a figures transfer:
    what a leaving replica counted (delivered, bounced, delay notices...),
    added once to the receiver's.  The token is the figures' digest, the same
    when the hand-over is repeated after a crash."""
    body = json.dumps(figures, separators=(",", ":"), sort_keys=True).encode()
    token = f"figures-{replica}-{hashlib.blake2b(body, digest_size=12).hexdigest()}"
    doc = {"v": VERSION, "from": replica, "figures": figures, "token": token}
    prefix = _pack(doc, b"", key)
    if len(prefix) > MAX_STATE_BYTES:
        raise TransferError("figures too large to hand over")
    return prefix, len(prefix), token


def decode(blob: bytes, length: int, key: bytes | None = None) -> tuple[Envelope, bytes] | tuple[str, dict]:
    """The envelope (with the state it had, :attr:`Envelope.handed`) and the
    message bytes of a transfer, or (token, figures) of a figures transfer;
    :class:`TransferError` when unreadable, or, with ``key``, not signed with it
    (only another replica of this stack may hand over mail with its state)."""
    if not 0 < length <= min(len(blob), MAX_STATE_BYTES):
        raise TransferError("XTRANSFER length does not fit the data")
    try:
        doc = json.loads(base64.b64decode(blob[:length].replace(b"\r\n", b""), validate=True))
        if key is not None and not (isinstance(doc, dict) and hmac.compare_digest(
                str(doc.get("sig", "")), _signature(key, doc, blob[length:]))):
            raise TransferError("not signed by a queue replica of this stack")
        if isinstance(doc, dict) and doc.get("v") == VERSION and isinstance(doc.get("figures"), dict):
            Figures.from_json(doc["figures"])  # readable, or refused here
            if length != len(blob) or not str(doc.get("token", "")).startswith("figures-"):
                raise TransferError("not a correo figures transfer")
            return str(doc["token"]), doc["figures"]
        if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("state"), dict):
            raise TransferError("not a correo queue transfer")
        raw_env = dict(doc["env"])
        raw_env.pop("handed", None)
        env = Envelope.from_json(raw_env)
    except TransferError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise TransferError(f"unreadable transfer state: {exc}") from None
    data = blob[length:]
    if len(data) != env.size:
        raise TransferError(f"message is {len(data)} octets, its envelope says {env.size}")
    handed = {"from": doc.get("from"), "state": doc["state"]}
    return Envelope(**{**_fields(env), "handed": handed}), data


def _fields(env: Envelope) -> dict:
    return {name: getattr(env, name) for name in env.__dataclass_fields__}


def same_message(held: Envelope, env: Envelope) -> bool:
    """Is the message this spool holds under ``env.id`` the one handed over
    (a repeated transfer), rather than another with the same id?"""
    return (held.sender, held.arrival, held.size, held.key) == (env.sender, env.arrival, env.size, env.key)


@dataclass
class Drainer:
    """Hands every message of a leaving replica to the replicas that stay."""

    state: QueueState
    spool: Spool
    clock: Clock
    metrics: Registry
    targets: list[tuple[int, Listen]]  # (ordinal, LMTP) of the replicas that stay
    hostname: str
    replica: int | None = None
    timeout: float = 120.0
    handed: int = 0
    started: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str = ""
    key: bytes | None = None  # signs the transfers (transfer_key)
    refusals: RefusalStore | None = None  # what the relays reported here (refusalreport)
    http_targets: list[tuple[int, str]] = field(default_factory=list)  # (ordinal, side port URL) of the staying ones
    _turn: int = 0
    _task: asyncio.Task | None = None
    _pools: list = field(default_factory=list)  # each worker's kept connections

    def start(self) -> None:
        self.started = self.clock.now()
        self._task = asyncio.create_task(self.run(), name="queue-drain")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def status(self) -> dict:
        return {"leaving": True, "drained": self.done.is_set(), "remaining": len(self.state),
                "handedOver": self.handed, "to": [i for i, _ in self.targets],
                **({"lastError": self.last_error} if self.last_error and len(self.state) else {})}

    async def run(self) -> None:
        pause = 1.0
        log.info("queue_draining", replica=self.replica, messages=len(self.state), to=[i for i, _ in self.targets])
        try:
            while True:
                pending = sorted(self.state, key=lambda m: (m.env.arrival, m.id))
                if not pending:
                    break
                queue = iter(pending)
                moved = sum(await asyncio.gather(*(self._worker(queue) for _ in range(min(WORKERS, len(pending))))))
                if moved:
                    pause = 1.0
                    continue
                log.warning("queue_drain_waiting", remaining=len(self.state), retry_in_seconds=pause,
                            error=self.last_error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
            while not self.state.figures.empty() and not await self.hand_figures():
                log.warning("queue_drain_waiting", remaining="figures", retry_in_seconds=pause,
                            error=self.last_error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
            while self.refusals is not None and self.refusals.tallies and not await self.hand_refusals():
                log.warning("queue_drain_waiting", remaining="refusals", retry_in_seconds=pause,
                            error=self.last_error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
        finally:
            await self._close_connections()
        log.info("queue_drained", replica=self.replica, handed_over=self.handed)
        self.done.set()

    async def _worker(self, queue) -> int:
        """Hand messages over one after the other, on this worker's own
        connections (several workers: the receivers' group commit fsyncs
        several messages at once)."""
        conns: dict[Listen, Connection] = {}
        self._pools.append(conns)
        moved = 0
        for msg in queue:
            moved += await self.hand_over(msg, conns)
        return moved

    async def _close_connections(self) -> None:
        for conns in self._pools:
            for conn in conns.values():
                try:
                    await asyncio.wait_for(conn.quit(), 5)
                except Exception:  # noqa: BLE001 - going anyway
                    conn.abort()
        self._pools.clear()

    async def hand_refusals(self) -> bool:
        """What the relays reported to this replica (refused mail, per
        domain: ``refusalreport``) goes, as the relays send it, signed, to a
        staying replica's side port; then this replica's file goes."""
        store = self.refusals
        assert store is not None
        if store.key is None:
            return True  # unsigned: nobody could have reported here either
        body = json.dumps({"domains": store.to_json()}, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(store.key, body)}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for ordinal, url in self.http_targets:
                try:
                    async with session.post(url.rstrip("/") + "/refusals", data=body, headers=headers) as rsp:
                        if rsp.status != 204:
                            raise ValueError(f"HTTP {rsp.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
                    self.last_error = f"{url}: refusals not taken: {exc}"
                    continue
                store.tallies = {}
                store.path.unlink(missing_ok=True)
                log.info("refusals_handed_over", to_replica=ordinal)
                return True
        return False

    async def hand_figures(self) -> bool:
        """What this replica counted goes to a staying one (the domain's
        figures do not drop when it goes); ours are reset only after the
        receiver's 250, and a repeated hand-over is counted once there."""
        payload, length, token = encode_figures(self.state.figures.to_json(), replica=self.replica, key=self.key)
        n = len(self.targets)
        for k in range(n):
            ordinal, target = self.targets[(self._turn + k) % n]
            if await self._send(target, "", [f"postmaster@{self.hostname}"], payload, length, ident=""):
                ev = figures_handed_event(token, self.clock.now(), ordinal)
                fut = self.spool.journal.append([ev])
                self.state.apply(ev)
                await fut
                log.info("figures_handed_over", to_replica=ordinal, token=token)
                return True
        return False

    async def hand_over(self, msg: Message, conns: dict[Listen, Connection] | None = None) -> bool:
        """One message to the next replica that takes it; True once one has
        acknowledged it and this spool has let it go."""
        if self.state.get(msg.id) is not msg:
            return True  # deleted meanwhile (correo queue delete)
        data = await self.spool.read(msg.id)
        payload, length = encode(msg, data, replica=self.replica, key=self.key)
        n = len(self.targets)
        for k in range(n):
            ordinal, target = self.targets[(self._turn + k) % n]
            ok = await self._transfer(msg, payload, length, target, conns)
            if ok:
                self._turn = (self._turn + 1) % n
                if self.state.get(msg.id) is msg:
                    # Out of the spool first (as a delete): no snapshot may
                    # name it live once the state no longer has it.
                    self.spool.remove(msg.id)
                    fut = self.spool.journal.append([handed_event(msg.id, self.clock.now(), ordinal)])
                    self.state.apply(handed_event(msg.id, self.clock.now(), ordinal))
                    await fut
                self.handed += 1
                self.metrics.inc("queue_handed_over_total")
                log.debug("message_handed_over", queue_id=msg.id, to_replica=ordinal,
                         recipients=sum(1 for r in msg.rcpts if not r.final),
                         delay_notice_sent=msg.delayed_notified)
                return True
        return False

    async def _transfer(self, msg: Message, payload: bytes, length: int, target: Listen,
                        conns: dict[Listen, Connection] | None = None) -> bool:
        env = msg.env
        rcpts = list(dict.fromkeys(r.address for r in env.recipients))
        return await self._send(target, env.sender, rcpts, payload, length, ident=env.id, key=env.key,
                                smtputf8=env.smtputf8, body8=env.body == "8BITMIME", conns=conns)

    async def _open(self, target: Listen) -> Connection | None:
        try:
            conn = await Connection.open(target.host, target.host, target.port, connect_timeout=10.0,
                                         timeout=self.timeout)
        except Failure as exc:
            self.last_error = f"{target}: {exc.reply.text}"
            return None
        try:
            if conn.greeting is None or conn.greeting.code != 220:
                self.last_error = f"{target}: greeting {conn.greeting}"
                conn.abort()
                return None
            reply = await conn.hello(self.hostname, lmtp=True)
        except Failure as exc:
            self.last_error = f"{target}: {exc.reply.text}"
            conn.abort()
            return None
        if reply.code != 250 or EXTENSION not in conn.extensions:
            self.last_error = f"{target}: does not take transfers ({str(reply)[:80]})"
            conn.abort()
            return None
        return conn

    async def _send(self, target: Listen, sender: str, rcpts: list[str], payload: bytes, length: int, *,
                    ident: str, key: str = "", smtputf8: bool = False, body8: bool = False,
                    conns: dict[Listen, Connection] | None = None) -> bool:
        """One transfer transaction; True once the receiver said 250.
        ``conns``: connections kept for the next transfers (else one each)."""
        for _attempt in range(2):
            conn = (conns or {}).pop(target, None)
            reused = conn is not None and conn.alive
            if not reused:
                if conn is not None:
                    conn.abort()
                conn = await self._open(target)
                if conn is None:
                    return False
            params = (f"{EXTENSION}={length}",)
            if key and deliverykeys.EXTENSION in conn.extensions:
                params += (f"{deliverykeys.EXTENSION}={key}",)
            try:
                outcome = await conn.transaction(sender, rcpts, data_lines([payload]), size=len(payload),
                                                 smtputf8=smtputf8, body8=body8,
                                                 ident=ident or None, all_or_nothing=True, mail_params=params)
            except Failure as exc:
                conn.abort()
                if reused and not conn.payload_sent and exc.kind == "unreachable":
                    continue  # the receiver closed an idle connection: nothing was sent, a fresh one
                self.last_error = f"{target}: {exc.reply.text}"
                return False
            if conns is not None and conn.alive and not any(r.code == 421 for r in outcome.replies):
                conns[target] = conn
            else:
                await _quit(conn)
            if outcome.replies and all(r.ok for r in outcome.replies):
                return True
            self.last_error = f"{target}: {str(outcome.replies[0])[:200] if outcome.replies else 'no reply'}"
            return False
        return False


async def _quit(conn: Connection) -> None:
    try:
        await asyncio.wait_for(conn.quit(), 5)
    except Exception:  # noqa: BLE001 - going anyway
        conn.abort()
