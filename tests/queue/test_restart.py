"""After a restart every spooled message resumes where it was: deferred ones
at their time, notices not sent twice, figures kept; leftovers of a crash
(half-written files, a torn journal line) do no harm."""
from __future__ import annotations

import json

import aiohttp

from queue_support import message

from correo_server.config import RetryPolicy
from correo_server.queue.records import DEFERRED


async def greylisting_mx(h):
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"
    return mx1


async def test_a_deferred_message_resumes_with_its_schedule(harness):
    mx1 = await greylisting_mx(harness)
    await harness.start()
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    await harness.restart()
    (msg,) = list(harness.service.state)
    (r,) = msg.rcpts
    assert r.state == DEFERRED and r.next_attempt == t0 + 300
    assert [(a.time, a.reply) for a in r.attempts] == [(t0, "451 4.7.1 greylisted")]
    assert r.attempts[0].server.startswith("mx1.remote.test[127.0.0.2]:")
    mx1.rcpt_reply = None
    await harness.run_until(t0 + 299)
    assert not mx1.messages
    await harness.run_until(t0 + 300)
    assert len(mx1.messages) == 1
    assert not list(harness.service.state)


async def test_the_delayed_notice_is_not_sent_again_after_a_restart(harness):
    await greylisting_mx(harness)
    await harness.start(retry=RetryPolicy(warn_after_seconds=3600, give_up_after_seconds=7200))
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.run_until(t0 + 3700)
    assert len(harness.notices("alice@example.com")) == 1
    await harness.restart()
    await harness.restart()
    await harness.run_until(t0 + 7200)
    subjects = [n["Subject"] for n in harness.notices("alice@example.com")]
    assert subjects == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]


async def test_cumulative_figures_survive_restarts(harness):
    mx1 = await greylisting_mx(harness)
    mx1.rcpt_reply = lambda rcpt: "550 5.1.1 unknown" if rcpt.startswith("nobody") else None
    await harness.start()
    await harness.send("alice@example.com", ["nobody@remote.test"])
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    before = harness.service.status()
    assert before["totals"]["bounced"] == 1
    assert before["totals"]["delivered"] == 1  # bob (the notice to alice is not counted)
    assert harness.notices("alice@example.com")
    await harness.restart()
    await harness.restart()
    after = harness.service.status()
    for key in ("totals", "domains", "senders"):
        a, b = dict(after[key]), dict(before[key])
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True), key


async def test_leftovers_of_a_crash_are_cleaned_and_ignored(harness):
    await greylisting_mx(harness)
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    await harness.service.stop()
    spool = harness.root / "spool"
    (spool / "tmp" / "0000HALFWRITTEN").write_bytes(b"CORREO-QUEUE 1\n{\"id\": \"0000HALF")
    (journal,) = sorted(spool.glob("journal.*"))
    with open(journal, "ab") as fh:
        fh.write(b'{"e":"attempt","id":"1A3')  # a write cut by the crash
    (spool / "msg" / "garbage").write_bytes(b"not a queue file")
    harness.service = None
    await harness.start()
    assert not list((spool / "tmp").iterdir())
    assert (spool / "corrupt" / "garbage").exists()
    (msg,) = list(harness.service.state)
    assert msg.rcpts[0].state == DEFERRED
    assert msg.rcpts[0].attempt_count == 1


async def test_compaction_keeps_everything(harness):
    """A tiny journal limit: snapshots are written over and over while mail flows."""
    mx1 = await greylisting_mx(harness)
    await harness.start()
    harness.service.spool.journal._compact_bytes = 300
    t0 = harness.clock.now()
    for i in range(5):
        await harness.send("alice@example.com", [f"u{i}@remote.test"], message(f"m{i}"))
    await harness.run_until(t0 + 900)
    assert harness.service.spool.journal.gen > 3
    await harness.restart()
    msgs = list(harness.service.state)
    assert len(msgs) == 5
    assert all(m.rcpts[0].attempt_count == 3 for m in msgs)  # t0, +300, +900
    mx1.rcpt_reply = None
    await harness.run_until(t0 + 2100)
    assert len(mx1.messages) == 5
    assert not list(harness.service.state)
    await harness.restart()
    assert not list(harness.service.state)
    assert harness.service.status()["totals"]["delivered"] == 5


async def test_a_failed_compaction_loses_nothing(harness, monkeypatch):
    mx1 = await greylisting_mx(harness)
    await harness.start()
    journal = harness.service.spool.journal
    journal._compact_bytes = 200
    from correo_server.queue import spool as spoolmod

    real_replace = spoolmod.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("snapshot.json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(spoolmod.os, "replace", failing_replace)
    t0 = harness.clock.now()
    gen = journal.gen
    for i in range(3):
        await harness.send("alice@example.com", [f"u{i}@remote.test"], message(f"m{i}"))
    await harness.run_until(t0 + 300)
    assert journal.gen == gen  # every compaction failed; the journal kept growing
    monkeypatch.setattr(spoolmod.os, "replace", real_replace)
    await harness.restart()
    msgs = list(harness.service.state)
    assert len(msgs) == 3 and all(m.rcpts[0].attempt_count == 2 for m in msgs)
    mx1.rcpt_reply = None
    await harness.run_until(t0 + 900)
    assert len(mx1.messages) == 3


def to_the_old_layout(spool, messages: dict) -> None:
    """Rewrite a stopped queue's spool as correo wrote it before segments:
    one file per message in msg/ (a header line, the envelope as JSON, the
    bytes), a version 1 snapshot; the journals stay as they are."""
    snap = json.loads((spool / "snapshot.json").read_text())
    (spool / "snapshot.json").write_text(json.dumps({"version": 1, "gen": snap["gen"], "state": snap["state"]}))
    for path in spool.glob("data.*"):
        path.unlink()
    (spool / "msg").mkdir(exist_ok=True)
    for qid, (env, data) in messages.items():
        (spool / "msg" / qid).write_bytes(b"CORREO-QUEUE 1\n" + json.dumps(env.to_json()).encode() + b"\n" + data)


async def test_mail_queued_by_an_older_correo_is_delivered_after_the_upgrade(harness):
    """A volume spooled by the one-file-per-message correo: every queued
    message is listed, keeps its schedule and notices, and is delivered."""
    mx1 = await greylisting_mx(harness)
    await harness.start(retry=RetryPolicy(warn_after_seconds=600, give_up_after_seconds=7200))
    t0 = harness.clock.now()
    for i in range(3):
        await harness.send("alice@example.com", [f"u{i}@remote.test"], message(f"old {i}"))
    await harness.run_until(t0 + 700)  # two attempts each, and the delay notices went out
    assert len(harness.notices("alice@example.com")) == 3
    before = {m.id: (m.env, await harness.service.spool.read(m.id)) for m in harness.service.state}
    await harness.service.stop()
    to_the_old_layout(harness.root / "spool", before)

    harness.service = None
    await harness.start(retry=RetryPolicy(warn_after_seconds=600, give_up_after_seconds=7200))
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{harness.http}/queue") as resp:
            listing = (await resp.json())["messages"]
    assert sorted(m["id"] for m in listing) == sorted(before)
    assert all(m.rcpts[0].attempt_count == 2 for m in harness.service.state)
    await harness.restart()  # read again, now partly in the new layout: still all there
    assert sorted(m.id for m in harness.service.state) == sorted(before)
    mx1.rcpt_reply = None
    await harness.run_until(t0 + 1000)
    got = sorted(m.data for m in mx1.messages)
    assert got == sorted(data for _, data in before.values())  # byte for byte
    assert len(harness.notices("alice@example.com")) == 3  # no second delay notice
    assert not list(harness.service.state)
    await harness.restart()
    assert not list(harness.service.state)
    assert not list((harness.root / "spool" / "msg").iterdir())  # the old files went with their mail
