"""Retries, the one "delayed" notice and the failure notice, on the domain's
schedule: days of queue life with a fake clock, seconds with the real one."""
from __future__ import annotations

import asyncio
import email.utils

from queue_support import HOSTNAME, message
from queue_reports import check_fields, parse_report

from correo_server.config import RetryPolicy

DAY = 86400


async def failing_mx(h, reply="451 4.7.1 greylisted"):
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    times: list[float] = []

    def rcpt(_address):
        times.append(h.clock.now())
        return mx1.script
    mx1.script = reply
    mx1.rcpt_reply = rcpt
    return mx1, times


async def test_the_whole_four_hour_five_day_cycle(harness):
    mx1, times = await failing_mx(harness)
    await harness.start()  # the default policy: warn after 4 h, give up after 5 d
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"], message("quarterly report", to="bob@remote.test"))

    await harness.run_until(t0 + 4 * 3600 - 1)
    assert harness.notices("alice@example.com") == []

    await harness.run_until(t0 + 4 * 3600)
    (delayed,) = harness.notices("alice@example.com")
    report = parse_report(delayed)
    check_fields(report, hostname=HOSTNAME, action="delayed")
    assert delayed["Subject"] == "Delayed Mail (still being retried)"
    (rcpt,) = report.per_recipient
    assert rcpt["Final-Recipient"] == "rfc822; bob@remote.test"
    assert rcpt["Status"] == "4.7.1"
    assert rcpt["Remote-MTA"] == "dns; mx1.remote.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.7.1 greylisted"
    assert email.utils.parsedate_to_datetime(rcpt["Will-Retry-Until"]).timestamp() == t0 + 5 * DAY
    assert email.utils.parsedate_to_datetime(report.per_message["Arrival-Date"]).timestamp() == int(t0)
    assert email.utils.parsedate_to_datetime(rcpt["Last-Attempt-Date"]).timestamp() == times[-1]
    assert "Subject: quarterly report" in report.headers
    assert "THIS IS A WARNING ONLY" in report.human

    await harness.run_until(t0 + 5 * DAY - 1)
    assert len(harness.notices("alice@example.com")) == 1  # exactly one delayed notice
    assert len(list(harness.service.state)) == 1

    await harness.run_until(t0 + 5 * DAY)
    delayed_again, failed = harness.notices("alice@example.com")
    assert delayed_again["Subject"] == delayed["Subject"]
    report = parse_report(failed)
    check_fields(report, hostname=HOSTNAME, action="failed")
    (rcpt,) = report.per_recipient
    assert rcpt["Status"] == "5.4.7"  # delivery time expired
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.7.1 greylisted"
    assert "gave up after 5 days" in report.human
    assert not list(harness.service.state)

    # The schedule: 5 min, doubling, at most an hour, the last try at exactly 5 days.
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[:5] == [300, 600, 1200, 2400, 3600]
    assert set(gaps[5:-1]) == {3600}
    assert times[0] == t0 and times[-1] == t0 + 5 * DAY
    figures = harness.service.status()["totals"]
    assert (figures["delayedNoticesSent"], figures["bounced"], figures["delivered"]) == (1, 1, 0)


async def test_the_retry_policy_is_the_senders_domains(harness):
    mx1, times = await failing_mx(harness)
    policy = RetryPolicy(initial_delay_seconds=60, backoff_factor=3, max_delay_seconds=1000,
                         warn_after_seconds=7200, give_up_after_seconds=10000)
    await harness.start(retry=policy)
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.run_until(t0 + 10000)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[:5] == [60, 180, 540, 1000, 1000]
    assert times[-1] == t0 + 10000
    kinds = [n["Subject"] for n in harness.notices("alice@example.com")]
    assert kinds == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]
    delayed = parse_report(harness.notices("alice@example.com")[0])
    assert "more than 2 hours" in delayed.human


async def test_no_notice_is_ever_sent_for_the_null_sender(harness):
    mx1, _ = await failing_mx(harness)
    await harness.start(retry=RetryPolicy(warn_after_seconds=3600, give_up_after_seconds=4 * 3600))
    t0 = harness.clock.now()
    # dave@example.com forwards to dave@remote.test: the message belongs to
    # example.com, whose policy gives up after 4 hours.
    replies = await harness.send("", ["dave@example.com"])
    assert all(r.startswith("250") for r in replies.values())
    await harness.run_until(t0 + 4 * 3600)
    assert not harness.mailstore.messages
    assert not mx1.messages
    assert not list(harness.service.state)
    assert harness.service.status()["totals"]["bounced"] == 1
    assert harness.service.status()["totals"]["delayedNoticesSent"] == 0

    # ...nor for a 5xx.
    mx1.script = "550 5.1.1 no such user"
    await harness.send("", ["dan@remote.test"])
    await harness.settle()
    assert not harness.mailstore.messages and not mx1.messages


async def test_delayed_then_delivered_sends_no_failure(harness):
    mx1, _ = await failing_mx(harness)
    await harness.start()
    t0 = harness.clock.now()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.run_until(t0 + 5 * 3600)
    mx1.script = None
    await harness.run_until(t0 + 6 * 3600)
    assert len(mx1.messages) == 1
    assert [n["Subject"] for n in harness.notices("alice@example.com")] == ["Delayed Mail (still being retried)"]
    totals = harness.service.status()["totals"]
    assert totals["delayedNoticesSent"] == 1 and totals["bounced"] == 0


async def test_one_notice_covers_every_recipient_that_failed_together(harness):
    mx1, _ = await failing_mx(harness, "550 5.7.1 go away")
    await harness.start()
    await harness.send("alice@example.com", ["a@remote.test", "b@remote.test", "bob@example.com"])
    await harness.settle()
    (notice,) = harness.notices("alice@example.com")
    finals = sorted(r["Final-Recipient"] for r in parse_report(notice).per_recipient)
    assert finals == ["rfc822; a@remote.test", "rfc822; b@remote.test"]


async def test_small_real_time_values_work_without_a_fake_clock(realtime):
    h = realtime
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.4.1 not now"
    await h.start(retry=RetryPolicy(initial_delay_seconds=1, backoff_factor=1, max_delay_seconds=1,
                                    warn_after_seconds=1, give_up_after_seconds=3))
    loop = asyncio.get_running_loop()
    start = loop.time()
    await h.send("alice@example.com", ["bob@remote.test"])
    seen: list[tuple[float, str]] = []
    while loop.time() - start < 10 and len(seen) < 2:
        for m in h.mailstore.for_rcpt("alice@example.com"):
            subject = m.parsed()["Subject"]
            if subject not in [s for _, s in seen]:
                seen.append((loop.time() - start, subject))
        await asyncio.sleep(0.05)
    assert [s for _, s in seen] == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]
    assert 0.9 <= seen[0][0] < 2.5, seen
    assert 2.9 <= seen[1][0] < 4.5, seen
