"""Queue replicas shrinking under load: the leaving replica hands every
message, with its history, to the replicas that stay, while the relay's pool
keeps handing new mail to whoever takes it.  Nothing is lost, nothing is
delivered twice, and no sender gets a second delay notice.

Three real ``QueueService`` replicas share one fake clock (hours pass
without sleeping), a loopback DNS server (dnslib), a sulking remote MX and
an LMTP server playing the mailstore (aiosmtpd); the relay's side is the
relay's own :class:`~correo_server.relay.queuepool.QueuePool`."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
from pathlib import Path

import pytest
from dnslib.server import DNSLogger, DNSServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "queue"))
from queue_support import Zone, make_config, make_harness, message  # noqa: E402

from correo_server import deliverykeys, queuereplicas  # noqa: E402
from correo_server.config import Listen, QueueReplica  # noqa: E402
from correo_server.queue import handover  # noqa: E402
from correo_server.queue.clock import FakeClock  # noqa: E402
from correo_server.queue.service import QueueService  # noqa: E402
from correo_server.relay.handoff import QueueClient, client_reply  # noqa: E402
from correo_server.relay.queuepool import QueuePool  # noqa: E402

HOUR = 3600


@pytest.fixture(scope="module")
def zone():
    z = Zone()
    server = DNSServer(z, port=0, address="127.0.0.1", tcp=False,
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    z.port = server.server.server_address[1]
    yield z
    server.stop()
    server.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replicas:
    """N queue replicas of one configuration, on one fake clock."""

    def __init__(self, h, n: int) -> None:
        self.h = h
        self.entries = tuple(QueueReplica(host="127.0.0.1", listen="127.0.0.1", lmtp=free_port(), http=free_port(),
                                          spool_dir=str(h.root / f"spool-{i}")) for i in range(n))
        self.cfg, self.config_dir = make_config(h.root, dns_port=h.zone.port, mailstore_port=h.mailstore_port,
                                                remote_port=h.remote_port, replicas=self.entries)
        self.services: dict[int, QueueService] = {}

    async def start(self, i: int, *, listed: int | None = None) -> QueueService:
        """Replica ``i`` with ``listed`` replicas in the configuration (fewer
        than ``i + 1``: it is leaving)."""
        cfg = self.cfg
        if listed is not None:
            cfg = dataclasses.replace(cfg, queue=dataclasses.replace(cfg.queue, replicas=self.entries[:listed]))
        own = queuereplicas.for_replica(cfg, i, spool_dir=self.entries[i].spool_dir, http=Listen("127.0.0.1", 0))
        svc = QueueService(own, str(self.config_dir), clock=self.h.clock, linger=0.2)
        await svc.start()
        self.services[i] = svc
        return svc

    def pool(self, indices) -> QueuePool:
        return QueuePool([QueueClient(Listen("127.0.0.1", self.entries[i].lmtp), local_hostname="relay.test",
                                      timeout=30, restart_wait=0) for i in indices])

    def running(self) -> list[QueueService]:
        return [s for s in self.services.values() if s.runner is not None and s.runner.running]

    async def settle(self) -> None:
        for _ in range(2):  # a notice one replica writes is delivered by the same one: twice over
            for s in self.running():
                await s.runner.idle(timeout=60)

    async def run_until(self, when: float) -> None:
        """Move the fake clock to ``when``, stopping at every due time of every replica."""
        await self.settle()
        while True:
            dues = [d for s in self.running() if (d := s.runner.next_due()) is not None]
            if not dues or min(dues) > when:
                break
            self.h.clock.set(max(min(dues), self.h.clock.now()))
            await self.settle()
        self.h.clock.set(when)
        await self.settle()

    async def stop(self) -> None:
        for s in self.services.values():
            await s.stop(grace=1.0)


async def hand(pool: QueuePool, subject: str, rcpts: list[str]) -> str:
    data = message(subject, to=", ".join(rcpts), msgid=f"<{subject}@test>")
    outcome = await pool.deliver("alice@example.com", rcpts, data,
                                 key=deliverykeys.message_key("alice@example.com", rcpts, data))
    reply = client_reply(outcome, "X")
    assert reply.code == 250, (subject, str(reply))
    return subject


def delayed_notices(h) -> list[bytes]:
    return [m.data for m in h.mailstore.for_rcpt("alice@example.com") if m.sender in ("", "<>")
            and b"Delayed Mail" in m.data]


@pytest.fixture
async def setup(tmp_path, zone):
    zone.clear()
    h = await make_harness(tmp_path, zone, FakeClock())
    zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 Not now, sulking"
    r = Replicas(h, 3)
    yield h, mx1, r
    await r.stop()
    for s in h.servers:
        s.close()


async def test_scale_down_under_load_loses_nothing_and_sends_no_second_delay_notice(setup):
    h, mx1, r = setup
    for i in range(3):
        await r.start(i)
    t0 = h.clock.now()
    pool = r.pool(range(3))

    # Before: mail spread over the three replicas, the remote part deferred
    # by the sulking MX, a delay notice for each after four hours.
    old = [await hand(pool, f"old-{n}", ["bob@example.com", f"r{n}@remote.test"]) for n in range(24)]
    held = {i: len(r.services[i].state) for i in range(3)}
    assert all(n > 0 for n in held.values()), held  # every replica took mail
    await r.run_until(t0 + 4 * HOUR + 60)
    assert len(delayed_notices(h)) == len(old)
    leaving = r.services[2]
    handed_ids = {m.id: (m.env.arrival, m.rcpts[1].attempt_count) for m in leaving.state if not m.env.notice}
    assert handed_ids and all(m.delayed_notified for m in leaving.state if not m.env.notice)

    # Scale down to two: replica 2 restarts as a leaving one and drains,
    # while the relay (still listing all three) hands new mail on.
    await leaving.stop()
    leaving = await r.start(2, listed=2)
    assert leaving.ports.keys() == {"http"}  # it takes no mail
    new: list[str] = []

    async def load() -> None:
        for n in range(16):
            new.append(await hand(pool, f"new-{n}", ["bob@example.com", f"n{n}@remote.test"]))
    await asyncio.gather(load(), asyncio.wait_for(leaving.drainer.done.wait(), 120))
    assert len(leaving.state) == 0
    doc = leaving.status()
    assert doc["drain"]["drained"] and doc["drain"]["handedOver"] >= len(handed_ids)
    assert doc["messages"] == 0
    # What it counted went along: the figures over the replicas that stay add up to all that was counted.
    assert doc["totals"]["delivered"] == 0 and doc["totals"]["delayedNoticesSent"] == 0

    # The messages kept their history where they went: arrival, attempts, the notice sent.
    found = {m.id: m for i in (0, 1) for m in r.services[i].state}
    for mid, (arrival, attempts) in handed_ids.items():
        assert found[mid].env.arrival == arrival
        assert found[mid].rcpts[1].attempt_count == attempts > 1
        assert found[mid].delayed_notified
        assert found[mid].rcpts[0].state == "delivered"  # the local recipient is not delivered again

    # The MX comes round; a day later everything is delivered, once.
    mx1.rcpt_reply = None
    await r.run_until(t0 + 28 * HOUR)
    for i in (0, 1):
        assert len(r.services[i].state) == 0
    local = [m.parsed()["Subject"] for m in h.mailstore.for_rcpt("bob@example.com")]
    assert sorted(local) == sorted(old + new)  # 0 lost, 0 duplicated
    remote = sorted(m.parsed()["Subject"] for m in mx1.messages)
    assert remote == sorted(old + new)
    totals = [r.services[i].status()["totals"] for i in (0, 1)]
    assert sum(t["delayedNoticesSent"] for t in totals) == len(old)
    assert sum(t["delivered"] for t in totals) == 2 * len(old + new)  # bob and the remote recipient, each
    notices = delayed_notices(h)
    assert len(notices) == len(old)  # no second delay notice, none for the new mail
    for subject in old:
        assert sum(f"Subject: {subject}\r\n".encode() in n for n in notices) == 1


async def test_a_repeated_transfer_is_absorbed_and_the_history_survives_a_restart(setup):
    h, mx1, r = setup
    receiver = await r.start(0)
    sender = await r.start(1)
    await hand(r.pool([1]), "once", ["bob@example.com", "x@remote.test"])
    await r.run_until(h.clock.now() + 4 * HOUR + 60)
    (msg,) = [m for m in sender.state if not m.env.notice]
    assert msg.delayed_notified and msg.rcpts[1].attempt_count > 1

    drainer = handover.Drainer(state=sender.state, spool=sender.spool, clock=h.clock, metrics=sender.metrics,
                               targets=[(0, Listen("127.0.0.1", r.entries[0].lmtp))], hostname="q1.test")
    data = await sender.spool.read(msg.id)
    payload, length = handover.encode(msg, data, replica=1)
    # The receiver's 250 lost on the way back (the sender crashed): the transfer is repeated.
    assert await drainer._transfer(msg, payload, length, Listen("127.0.0.1", r.entries[0].lmtp))
    assert await drainer._transfer(msg, payload, length, Listen("127.0.0.1", r.entries[0].lmtp))
    assert [m.id for m in receiver.state].count(msg.id) == 1

    # The receiver restarts: the state came in the record itself.
    await receiver.stop()
    receiver = await r.start(0)
    got = receiver.state.get(msg.id)
    assert got.env.arrival == msg.env.arrival and got.delayed_notified
    assert got.rcpts[1].attempt_count == msg.rcpts[1].attempt_count
    assert got.rcpts[0].state == "delivered" and got.rcpts[1].state == "deferred"
    assert [a.reply for a in got.rcpts[1].attempts] == [a.reply for a in msg.rcpts[1].attempts]

    # The sender's figures are added once, however often their hand-over is repeated.
    before = receiver.status()["totals"]["delivered"]
    counted = sender.state.figures.total.delivered
    assert counted > 0
    payload_f, length_f, token = handover.encode_figures(sender.state.figures.to_json(), replica=1)
    target = Listen("127.0.0.1", r.entries[0].lmtp)
    for _ in range(2):
        assert await drainer._send(target, "", ["postmaster@q1.test"], payload_f, length_f, ident="")
    assert receiver.status()["totals"]["delivered"] == before + counted
    await receiver.stop()
    receiver = await r.start(0)  # kept across a restart, still once
    assert receiver.status()["totals"]["delivered"] == before + counted

    # A corrupt transfer is refused and nothing is kept.
    bad = payload[:length - 10] + b"!!!!!!!!\r\n" + payload[length:]
    other = dataclasses.replace(msg, env=dataclasses.replace(msg.env, id="OTHER0000000001"))
    assert not await drainer._transfer(other, bad, length, Listen("127.0.0.1", r.entries[0].lmtp))
    assert "Transfer refused" in drainer.last_error
    assert receiver.state.get("OTHER0000000001") is None


async def test_the_relay_pool_skips_a_replica_that_is_down(setup):
    h, mx1, r = setup
    await r.start(0)
    await r.start(1)
    pool = r.pool(range(3))  # replica 2 was never started: connection refused
    for n in range(6):
        await hand(pool, f"m{n}", ["bob@example.com"])
    assert await pool.ping() is True and pool.up == [True, True, False]
    await r.settle()
    assert len(h.mailstore.for_rcpt("bob@example.com")) == 6
    assert {s.status()["totals"]["delivered"] > 0 for s in r.services.values()} == {True}


def with_srs_secret(r) -> None:
    """Give the first domain an SRS secret (what signs the replicas' transfers)."""
    from correo_server.srs import generate_key
    (r.config_dir / "srs").mkdir(exist_ok=True)
    (r.config_dir / "srs" / "example.com.keys").write_text(generate_key() + "\n")
    first, *rest = r.cfg.domains
    r.cfg = dataclasses.replace(r.cfg, domains=(dataclasses.replace(first, srs_key_file="srs/example.com.keys"),
                                                *rest))


async def test_what_the_relays_reported_as_refused_moves_with_the_leaving_replica(setup):
    h, mx1, r = setup
    with_srs_secret(r)
    staying = await r.start(0)
    spool1 = Path(r.entries[1].spool_dir)
    spool1.mkdir(parents=True, exist_ok=True)
    (spool1 / "refusals.json").write_text(
        '{"domains": {"example.com": {"refused": 3, "byReason": {"spf": 2, "dnsbl": 1}, "last": null}}}')
    leaving = await r.start(1, listed=1)
    assert leaving.status()["refusals"]["example.com"]["refused"] == 3  # still shown while it drains
    await asyncio.wait_for(leaving.drainer.done.wait(), 60)
    assert leaving.status()["drain"]["drained"]
    assert staying.status()["refusals"]["example.com"]["refused"] == 3
    assert staying.status()["refusals"]["example.com"]["byReason"] == {"dnsbl": 1, "spf": 2}
    assert not (spool1 / "refusals.json").exists()
    assert "refusals" not in leaving.status() or not leaving.status()["refusals"]


async def test_only_a_replica_of_this_stack_can_hand_over_mail_with_its_state(setup):
    """With the domain's SRS secret in place, transfers are signed: a relay
    or a mailstore speaking LMTP to the queue cannot make up a message's state."""
    h, mx1, r = setup
    with_srs_secret(r)
    receiver = await r.start(0)
    sender = await r.start(1)
    await hand(r.pool([1]), "signed", ["x@remote.test"])
    (msg,) = list(sender.state)
    data = await sender.spool.read(msg.id)
    target = Listen("127.0.0.1", r.entries[0].lmtp)
    key = handover.transfer_key(sender.config)
    assert key is not None
    forged = handover.Drainer(state=sender.state, spool=sender.spool, clock=h.clock, metrics=sender.metrics,
                              targets=[(0, target)], hostname="relay.test")
    for wrong in (None, b"not the stack's key"):  # unsigned, or signed with another key
        payload, length = handover.encode(msg, data, replica=1, key=wrong)
        assert not await forged._transfer(msg, payload, length, target)
        assert "not signed by a queue replica" in forged.last_error
    payload, length, _ = handover.encode_figures({"total": {"delivered": 1000}}, replica=1)
    assert not await forged._send(target, "", ["postmaster@relay.test"], payload, length, ident="")
    assert receiver.state.get(msg.id) is None and receiver.status()["totals"]["delivered"] == 0
    payload, length = handover.encode(msg, data, replica=1, key=key)  # the replica's own
    assert await forged._transfer(msg, payload, length, target)
    assert receiver.state.get(msg.id) is not None


async def test_the_relay_pool_waits_for_replicas_restarting_rather_than_answer_451(setup):
    h, mx1, r = setup
    pool = QueuePool([QueueClient(Listen("127.0.0.1", r.entries[i].lmtp), local_hostname="relay.test", timeout=30,
                                  restart_wait=20) for i in range(2)])
    sending = asyncio.ensure_future(hand(pool, "waited", ["bob@example.com"]))
    await asyncio.sleep(1.0)  # no replica is up yet: the hand-off waits
    assert not sending.done()
    await r.start(1)
    await asyncio.wait_for(sending, 20)
    await r.settle()
    assert [m.parsed()["Subject"] for m in h.mailstore.for_rcpt("bob@example.com")] == ["waited"]
