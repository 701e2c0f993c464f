"""What ``correo queue`` and the logs say about an attempt that is running
now: "delivery in progress" (not a next attempt in the past), the deferral's
next attempt as an RFC 3339 time, and a message deleted during its attempt
is not logged as deferred afterwards."""
from __future__ import annotations

import argparse
import asyncio

import aiohttp
import structlog

from correo_server import statusdoc
from correo_server.queue import admin


async def held_mx(harness):
    """A remote MX that holds each transaction at MAIL until ``gate`` is set."""
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"
    gate = asyncio.Event()
    plain = mx1.handle_MAIL

    async def handle_mail(*args):
        await gate.wait()
        return await plain(*args)

    mx1.handle_MAIL = handle_mail
    return mx1, gate


async def in_flight(harness, rcpt: str):
    for _ in range(600):
        msgs = [m for m in harness.service.state if m.rcpts[0].rcpt.address == rcpt]
        if msgs and msgs[0].rcpts[0].busy:
            return msgs[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no attempt for {rcpt} started")


def list_args(url: str, **kw) -> argparse.Namespace:
    base = dict(url=url, data=None, output="table", queue_command="list", id=None, all=False)
    return argparse.Namespace(**base | kw)


async def test_an_attempt_running_now_is_listed_as_in_progress_then_deferred_with_an_rfc3339_time(harness, capsys):
    mx1, gate = await held_mx(harness)
    await harness.start()
    with structlog.testing.capture_logs() as events:
        await harness.send("alice@example.com", ["bob@remote.test"])
        msg = await in_flight(harness, "bob@remote.test")
        async with aiohttp.ClientSession() as http:
            async with http.get(harness.http + "/queue") as resp:
                (r,) = (await resp.json())["messages"][0]["recipients"]
        assert r["inProgress"] is True and r["nextAttempt"] is None and r["state"] == "pending"
        capsys.readouterr()
        assert await asyncio.to_thread(admin.cli, list_args(harness.http)) == 0
        out = capsys.readouterr().out
        assert "bob@remote.test  pending, delivery in progress" in out
        assert "next attempt" not in out
        assert await asyncio.to_thread(admin.cli, list_args(harness.http, queue_command="show", id=msg.id)) == 0
        assert "bob@remote.test: pending, 0 attempt(s), delivery in progress" in capsys.readouterr().out

        gate.set()
        await harness.settle()
    (deferred,) = [e for e in events if e["event"] == "deferred"]
    assert deferred["queue_id"] == msg.id
    assert deferred["next_attempt"] == statusdoc.rfc3339(harness.clock.now() + 300)  # e.g. 2026-12-04T21:52:00Z
    assert await asyncio.to_thread(admin.cli, list_args(harness.http)) == 0
    out = capsys.readouterr().out
    assert f"(451 4.7.1 greylisted; next attempt {statusdoc.rfc3339(harness.clock.now() + 300)})" in out


async def test_a_message_deleted_during_its_attempt_is_not_logged_as_deferred(harness):
    mx1, gate = await held_mx(harness)
    await harness.start()
    with structlog.testing.capture_logs() as events:
        await harness.send("alice@example.com", ["carl@remote.test"])
        msg = await in_flight(harness, "carl@remote.test")
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{harness.http}/queue/{msg.id}") as resp:
                assert (await resp.json()) == {"id": msg.id, "deleted": True}
        gate.set()
        await harness.settle()
    names = [e["event"] for e in events if e.get("queue_id") == msg.id]
    assert "deferred" not in names and "bounced" not in names
    (dropped,) = [e for e in events if e["event"] == "attempt_dropped"]
    assert dropped["reason"] == "deleted from the queue during the attempt" and "451" in dropped["reply"]
    assert not list(harness.service.state)
    assert not harness.notices("alice@example.com")
    await harness.restart()  # and it stays deleted
    assert not list(harness.service.state)
