"""The pure parts: retry decisions, reply parsing, data transparency, notice
fields, state events, the journal's group commit."""
from __future__ import annotations

import asyncio
import email
import email.policy
import json

import pytest
from queue_reports import check_fields, parse_report

from correo_server.config import RetryPolicy
from correo_server.queue import dsn, schedule
from correo_server.queue.records import (Attempt, Envelope, Message, QueueState, Rcpt, Recipient,
                                         attempt_event, notice_event)
from correo_server.queue import spool as spoolmod
from correo_server.queue.spool import Spool, _parse_records, decode_message, encode_message

POLICY = RetryPolicy()  # 300 s, x2, max 3600, warn 4 h, give up 5 d
T0 = 1_800_000_000.0


def env(sender="alice@example.com", n=1) -> Envelope:
    return Envelope(id="ABC", sender=sender, recipients=tuple(Rcpt(f"r{i}@remote.test", f"r{i}@remote.test")
                                                              for i in range(n)),
                    arrival=T0, size=10, domain="example.com", sender_mailbox=sender)


class TestRetryDecisions:
    def test_success_and_permanent_failure_are_final(self):
        assert schedule.after_attempt(POLICY, T0, 1, T0, 250, "250 ok").state == "delivered"
        out = schedule.after_attempt(POLICY, T0, 1, T0, 550, "550 5.1.1 no")
        assert (out.state, out.reason) == ("bounced", "550 5.1.1 no")

    def test_temporary_failures_back_off_up_to_the_maximum(self):
        delays = [schedule.after_attempt(POLICY, T0, n, T0 + 10, 451, "451 x").next_attempt - (T0 + 10)
                  for n in range(1, 8)]
        assert delays == [300, 600, 1200, 2400, 3600, 3600, 3600]

    def test_an_unreachable_mailstore_is_retried_within_seconds(self):
        delays = [schedule.after_attempt(POLICY, T0, n, T0, 451, "451 4.4.1 connect to mailstore: refused",
                                         hop_down=True).next_attempt - T0 for n in range(1, 8)]
        assert delays == [1, 2, 4, 8, 16, 30, 30]

    def test_the_last_try_is_at_the_give_up_time_and_then_it_bounces(self):
        near_end = T0 + POLICY.give_up_after_seconds - 100
        out = schedule.after_attempt(POLICY, T0, 50, near_end, 451, "451 4.4.1 refused")
        assert out.next_attempt == T0 + POLICY.give_up_after_seconds
        out = schedule.after_attempt(POLICY, T0, 51, T0 + POLICY.give_up_after_seconds, 451, "451 4.4.1 refused")
        assert out.state == "bounced" and out.reason == "gave up after 5 days: 451 4.4.1 refused"

    def test_delayed_notice_is_due_at_warn_time_once_and_never_for_the_null_sender(self):
        msg = Message.fresh(env())
        msg.rcpts[0].state, msg.rcpts[0].next_attempt = "deferred", T0 + 20000
        warn = T0 + POLICY.warn_after_seconds
        assert schedule.next_due(POLICY, msg) == warn
        assert not schedule.due_now(POLICY, msg, warn - 1)
        assert schedule.due_now(POLICY, msg, warn).delayed_notice == [0]
        msg.delayed_notified = True
        assert schedule.next_due(POLICY, msg) == T0 + 20000
        null = Message.fresh(env(sender=""))
        null.rcpts[0].state, null.rcpts[0].next_attempt = "deferred", T0 + 20000
        assert schedule.next_due(POLICY, null) == T0 + 20000
        assert not schedule.due_now(POLICY, null, warn)

    def test_notices_wait_for_deliveries_in_flight(self):
        msg = Message.fresh(env(n=2))
        msg.rcpts[0].state, msg.rcpts[0].notified = "bounced", False
        msg.rcpts[1].busy = True
        assert schedule.due_now(POLICY, msg, T0).failure_notice == []
        msg.rcpts[1].busy = False
        msg.rcpts[1].state = "delivered"
        assert schedule.due_now(POLICY, msg, T0).failure_notice == [0]

    @pytest.mark.parametrize("seconds,text", [(14400, "4 hours"), (432000, "5 days"), (6, "6 seconds"),
                                              (60, "1 minute"), (7200, "2 hours")])
    def test_durations_read_like_english(self, seconds, text):
        assert schedule.human_duration(seconds) == text


class TestNotices:
    def make(self, kind, reply, attempts=1):
        e = env(n=1)
        r = Recipient(e.recipients[0], state="bounced" if kind == "failed" else "deferred", reply=reply,
                      remote_mta="mx1.remote.test", attempts=[Attempt(T0 + 60, "mx1", reply)] * attempts)
        notice = dsn.build(kind, hostname="mx.example.com", env=e, recipients=[r],
                           header=b"From: a@example.com\r\nSubject: hi\r\n\r\nbody, never quoted\r\n",
                           now=T0 + 100, retry_until=T0 + 432000, warn_after=14400)
        return email.message_from_bytes(notice.data, policy=email.policy.default)

    def test_failed(self):
        report = parse_report(self.make("failed", "550 5.7.1 rejected"))
        check_fields(report, hostname="mx.example.com", action="failed")
        assert report.per_recipient[0]["Status"] == "5.7.1"
        assert "Subject: hi" in report.headers and "never quoted" not in report.headers

    def test_delayed(self):
        report = parse_report(self.make("delayed", "451 4.4.1 connect to mx1: Connection refused"))
        check_fields(report, hostname="mx.example.com", action="delayed")
        assert report.per_recipient[0]["Status"] == "4.4.1"

    @pytest.mark.parametrize("kind", ["failed", "delayed"])
    def test_the_text_says_only_the_headers_are_attached(self, kind):
        """Only ``text/rfc822-headers`` is attached: the text must not promise
        the message ("It's attached below", "the attached returned message")."""
        report = parse_report(self.make(kind, "451 4.7.1 greylisted"))
        text = " ".join(report.human.split())
        assert "The headers of the original message are attached." in text
        assert "It's attached" not in text and "returned message" not in text

    def test_gave_up(self):
        report = parse_report(self.make("failed", "gave up after 5 days: 451 4.7.1 greylisted"))
        rcpt = report.per_recipient[0]
        assert rcpt["Status"] == "5.4.7" and rcpt["Diagnostic-Code"] == "smtp; 451 4.7.1 greylisted"


class TestState:
    def test_events_drive_state_and_figures(self):
        state = QueueState()
        msg = Message.fresh(env(n=2))
        state.add(msg)
        state.apply(attempt_event(msg, 0, time=T0, server="s", destination="mx1", remote_mta="mx1",
                                  reply="250 ok", state="delivered"))
        state.apply(attempt_event(msg, 1, time=T0, server="s", destination="mx1", remote_mta="mx1",
                                  reply="550 no", state="bounced"))
        assert not msg.complete()  # the bounce is not reported yet
        state.apply(notice_event(msg, "failed", [1], time=T0, notice_id="ABCF1"))
        assert msg.complete()
        f = state.figures
        assert (f.total.delivered, f.total.bounced, f.domains["example.com"].bounced) == (1, 1, 1)
        assert f.senders["alice@example.com"].last_bounce["recipient"] == "r1@remote.test"

    def test_snapshot_round_trip(self):
        state = QueueState()
        msg = Message.fresh(env())
        state.add(msg)
        state.apply(attempt_event(msg, 0, time=T0, server="s", destination="mx1", remote_mta="mx1",
                                  reply="451 later", state="deferred", next_attempt=T0 + 300))
        snap = json.loads(json.dumps(state.snapshot()))
        again = Message.from_json(msg.env, snap["messages"]["ABC"])
        assert again == msg
        assert Envelope.from_json(json.loads(json.dumps(msg.env.to_json()))) == msg.env
        assert decode_message(encode_message(msg.env, b"data\r\n")) == (msg.env, b"data\r\n")


async def test_the_journal_commits_concurrent_changes_together(tmp_path):
    spool = Spool(tmp_path)
    spool.recover()
    journal = spool.open_journal(lambda: {"figures": {}, "messages": {}})
    await asyncio.gather(*(journal.append([{"e": "retry", "id": f"M{i}", "t": T0}]) for i in range(50)))
    assert journal.flushes < 10  # group commit: 50 changes, a few fsyncs
    await journal.close()
    found = Spool(tmp_path).recover()
    assert [ev["id"] for ev in found.events] == [f"M{i}" for i in range(50)]


async def test_spool_disk_work_is_batched_and_each_waiter_resumes_after_its_own_work(tmp_path):
    """Messages, journal events and discards asked for together share
    worker-thread calls; each store returns with its record on disk."""
    spool = Spool(tmp_path)
    spool.recover()
    journal = spool.open_journal(lambda: {"figures": {}, "messages": {}})
    old = Envelope(id="OLD", sender="a@example.com", recipients=(Rcpt("b@example.com", "b@example.com", True),),
                   arrival=T0, size=4)
    await spool.store(old, b"old\n")
    calls = spool.disk.calls
    envs = [Envelope(id=f"M{i}", sender="a@example.com", recipients=old.recipients, arrival=T0, size=4)
            for i in range(20)]

    async def store(env):
        await spool.store(env, b"new\n")
        assert spool.exists(env.id) and env.id in records_on_disk(tmp_path)

    await asyncio.gather(*(store(env) for env in envs), journal.append([{"e": "retry", "id": "OLD", "t": T0}]),
                         spool.discard("OLD"))
    assert spool.disk.calls - calls < 10
    assert not spool.exists("OLD")
    assert await spool.read("M3") == b"new\n"  # the first read comes from memory...
    assert await spool.read("M3") == b"new\n"  # ...the next from the segment
    journal._compact_bytes = 0  # the next batch compacts: its snapshot names the live records
    await journal.append([{"e": "retry", "id": "M0", "t": T0}])
    await journal.close()
    found = Spool(tmp_path).recover()
    assert sorted(found.envelopes) == sorted(env.id for env in envs)  # OLD is not live any more


def records_on_disk(root) -> list[str]:
    return [env.id for path in sorted(root.glob("data.*")) for env, *_ in _parse_records(path.read_bytes())[0]]


async def test_segments_go_when_nothing_in_them_is_live_and_a_cut_record_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(spoolmod, "SMALL_SEGMENT_BYTES", 100)
    spool = Spool(tmp_path)
    spool.recover()
    journal = spool.open_journal(lambda: {"figures": {}, "messages": {}})
    rcpts = (Rcpt("b@example.com", "b@example.com", True),)
    first = [Envelope(id=f"A{i}", sender="", recipients=rcpts, arrival=T0, size=60) for i in range(3)]
    await asyncio.gather(*(spool.store(env, b"x" * 60) for env in first))
    (seg1,) = sorted(tmp_path.glob("data.*"))
    for env in first:
        await spool.discard(env.id)
    second = Envelope(id="B0", sender="", recipients=rcpts, arrival=T0, size=60)
    await spool.store(second, b"y" * 60)  # the first segment is past the small size and dead: a new one
    await spool.disk.drain()
    assert not seg1.exists() and records_on_disk(tmp_path) == ["B0"]
    await journal.close()
    (seg2,) = sorted(tmp_path.glob("data.*"))
    with open(seg2, "ab") as fh:  # a crash in the middle of an append
        fh.write(spoolmod.encode_record(Envelope(id="CUT", sender="", recipients=rcpts, arrival=T0, size=5),
                                        b"zzzzz")[:-4])
    again = Spool(tmp_path)
    found = again.recover()
    assert sorted(found.envelopes) == ["B0"] and not found.corrupt
    assert await again.read("B0") == b"y" * 60
    assert spoolmod._parse_records(seg2.read_bytes())[2] is None  # cut back to the last whole record


async def test_a_long_lived_message_does_not_keep_its_segment(tmp_path, monkeypatch):
    """At a compaction, the live records of mostly dead segments are copied to
    the current one and the old segment goes; a crash between the copy and
    the deletion leaves two identical records, read as one message."""
    monkeypatch.setattr(spoolmod, "SEGMENT_BYTES", 1800)  # about five records each
    monkeypatch.setattr(spoolmod, "SMALL_SEGMENT_BYTES", 300)
    spool = Spool(tmp_path)
    spool.recover()
    journal = spool.open_journal(lambda: {"figures": {}, "messages": {}})
    rcpts = (Rcpt("b@example.com", "b@example.com", True),)
    envs = [Envelope(id=f"M{i:02d}", sender="", recipients=rcpts, arrival=T0, size=100) for i in range(12)]
    for env in envs:
        await spool.store(env, env.id.encode() * 50)
    assert len(list(tmp_path.glob("data.*"))) >= 2
    for env in envs[1:]:
        await spool.discard(env.id)
    await spool.disk.drain()
    (old_seg,) = {spool.locs["M00"].seg}
    assert spool.segment_path(old_seg).exists()  # kept alive by M00
    journal._compact_bytes = 0  # a compaction, and the copy after it
    await journal.append([{"e": "retry", "id": "M00", "t": T0}])
    await spool.disk.drain()
    assert spool.locs["M00"].seg != old_seg and not spool.segment_path(old_seg).exists()
    assert await spool.read("M00") == b"M00" * 50
    await journal.close()
    found = Spool(tmp_path).recover()
    assert sorted(found.envelopes) == ["M00"]
    again = Spool(tmp_path)
    again.recover()
    assert await again.read("M00") == b"M00" * 50
    # A copy made just before a crash, its old segment not deleted yet: one message.
    loc = again.locs["M00"]
    record = again._read_range(loc.seg, loc.start, loc.end - loc.start)
    again.segment_path(loc.seg + 5).write_bytes(record)
    found = Spool(tmp_path).recover()
    assert sorted(found.envelopes) == ["M00"]
