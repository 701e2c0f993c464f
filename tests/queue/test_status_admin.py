"""What the queue tells the operator (``/status``, ``/metrics``) and what an
admin can do to it (the HTTP API and ``correo queue``)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys

import aiohttp
import pytest
from queue_support import after_restart, message

from correo_server import statusdoc
from correo_server.config import Listen
from correo_server.metrics import Registry
from correo_server.queue import admin
from correo_server.sideport import SidePort


async def scenario(h):
    """alice: one recipient deferred past 4 h, one bounced; x@remote: one delivered."""
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = lambda rcpt: ("550 5.1.1 no such user" if rcpt.startswith("nobody")
                                   else "451 4.7.1 greylisted" if rcpt.startswith("bob") else None)
    await h.start()
    t0 = h.clock.now()
    await h.send("alice@example.com", ["bob@remote.test", "nobody@remote.test"])
    await h.send("x@remote.test", ["bob@example.com"], message(sender="x@remote.test"))
    await h.run_until(t0 + 4 * 3600 + 60)
    return mx1, t0


def same_keys(doc: dict, typed) -> None:
    assert set(doc) == set(typed.__annotations__), (sorted(doc), sorted(typed.__annotations__))


async def test_status_document_reports_what_happened(harness):
    mx1, t0 = await scenario(harness)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{harness.http}/status") as resp:
            assert resp.status == 200
            doc = await resp.json()
    same_keys(doc, statusdoc.QueueStatus)
    assert doc["service"] == "queue" and doc["ready"] is True
    assert doc["time"] == statusdoc.rfc3339(harness.clock.now())
    totals = doc["totals"]
    same_keys(totals, statusdoc.QueueFigures)
    assert totals["active"] == 1 and totals["deferred"] == 1
    assert totals["bounced"] == 1
    assert totals["delayedNoticesSent"] == 1
    assert totals["delivered"] == 1  # bob@example.com (the notices to alice are not counted as mail)
    assert totals["oldestDeferredAgeSeconds"] == 4 * 3600 + 60
    (err,) = totals["lastErrors"]
    same_keys(err, statusdoc.LastError)
    assert err["destination"] == "mx1.remote.test" and err["error"] == "451 4.7.1 greylisted"
    (delayed,) = totals["delayed"]
    same_keys(delayed, statusdoc.Delayed)
    assert delayed["recipient"] == "bob@remote.test" and delayed["sender"] == "alice@example.com"
    assert delayed["destination"] == "mx1.remote.test" and delayed["lastError"] == "451 4.7.1 greylisted"
    assert delayed["since"] == statusdoc.rfc3339(t0) and delayed["ageSeconds"] == 4 * 3600 + 60
    (bounce,) = totals["lastBounces"]
    same_keys(bounce, statusdoc.Bounce)
    assert bounce["recipient"] == "nobody@remote.test" and bounce["reason"] == "550 5.1.1 no such user"
    assert bounce["sender"] == "alice@example.com"

    assert set(doc["domains"]) == {"example.com", "other.org"}
    ex = doc["domains"]["example.com"]
    assert (ex["active"], ex["deferred"], ex["bounced"], ex["delayedNoticesSent"], ex["delivered"]) == (1, 1, 1, 1, 1)
    assert doc["domains"]["other.org"] == statusdoc.empty_figures()

    alice = doc["senders"]["alice@example.com"]
    same_keys(alice, statusdoc.SenderFigures)
    assert (alice["deferred"], alice["bounced"], alice["delayedNoticesSent"], alice["delivered"]) == (1, 1, 1, 0)
    assert alice["lastBounce"]["recipient"] == "nobody@remote.test"
    assert alice["lastDelivery"] is None
    assert set(doc["senders"]) == {"alice@example.com"}

    # The greylisting ends: the figures move.
    accepted_at = []
    mx1.rcpt_reply = lambda rcpt: accepted_at.append(harness.clock.now())
    await harness.run_until(harness.clock.now() + 3600)
    doc = harness.service.status()
    assert doc["totals"]["active"] == 0 and doc["totals"]["delayed"] == []
    assert doc["totals"]["oldestDeferredAgeSeconds"] == 0
    alice = doc["senders"]["alice@example.com"]
    assert alice["delivered"] == 1 and alice["deferred"] == 0
    assert alice["lastDelivery"] == statusdoc.rfc3339(accepted_at[0])


async def test_metrics_and_probes(harness):
    await scenario(harness)
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(harness.http + path) as resp:
                assert resp.status == 200
        async with http.get(harness.http + "/metrics") as resp:
            text = await resp.text()
    assert 'correo_queue_recipients{state="deferred"} 1' in text
    assert 'correo_queue_recipients{state="pending"} 0' in text
    assert "correo_queue_messages 1" in text
    assert f"correo_queue_oldest_message_age_seconds {4 * 3600 + 60}" in text
    assert 'correo_queue_attempts_total{destination="mx1.remote.test",result="bounced"} 1' in text
    assert 'correo_queue_attempts_total{destination="mailstore",result="delivered"} 3' in text
    assert 'correo_queue_notices_total{kind="delayed"} 1' in text
    assert 'correo_queue_notices_total{kind="failed"} 1' in text


async def test_readyz_fails_when_the_disk_is_full(harness):
    await harness.start(min_free_bytes=1 << 62)
    async with aiohttp.ClientSession() as http:
        async with http.get(harness.http + "/readyz") as resp:
            assert resp.status == 503


async def test_admin_http_list_show_retry_delete(harness):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.send("alice@example.com", ["carl@remote.test"])
    await harness.settle()
    async with aiohttp.ClientSession() as http:
        async with http.get(harness.http + "/queue") as resp:
            doc = await resp.json()
        assert doc["count"] == 2
        first, second = sorted(doc["messages"], key=lambda m: m["recipients"][0]["address"])
        assert first["sender"] == "alice@example.com"
        (r,) = first["recipients"]
        assert (r["address"], r["state"], r["attempts"], r["lastReply"]) == \
            ("bob@remote.test", "deferred", 1, "451 4.7.1 greylisted")
        assert r["nextAttempt"] == statusdoc.rfc3339(harness.clock.now() + 300)

        async with http.get(f"{harness.http}/queue/{first['id']}") as resp:
            detail = await resp.json()
        (hist,) = detail["recipients"][0]["history"]
        assert hist["reply"] == "451 4.7.1 greylisted" and hist["server"].startswith("mx1.remote.test[127.0.0.2]")

        # retry: attempted now, not in 5 minutes; the MX has stopped greylisting.
        mx1.rcpt_reply = None
        async with http.post(f"{harness.http}/queue/{first['id']}/retry") as resp:
            assert (await resp.json()) == {"id": first["id"], "recipients": 1}
        await harness.settle()
        assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]

        async with http.delete(f"{harness.http}/queue/{second['id']}") as resp:
            assert (await resp.json()) == {"id": second["id"], "deleted": True}
        assert not list(harness.service.state)
        assert not after_restart(harness.root / "spool", harness.root)  # it does not come back either
        assert not harness.notices("alice@example.com")  # deleting sends no notice

        for method, path in (("GET", "/queue/NOPE"), ("POST", "/queue/NOPE/retry"), ("DELETE", "/queue/NOPE")):
            async with http.request(method, harness.http + path) as resp:
                assert resp.status == 404
                assert "NOPE" in (await resp.json())["error"]

        await harness.restart()  # a deleted message stays deleted
        assert not list(harness.service.state)


def args(**kw) -> argparse.Namespace:
    base = dict(url=None, data=None, output="table", queue_command="list", id=None, all=False)
    base.update(kw)
    return argparse.Namespace(**base)


async def run_cli(**kw) -> int:
    return await asyncio.to_thread(admin.cli, args(**kw))


async def test_correo_queue_command(harness, tmp_path, capsys):
    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"
    await harness.start()
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.send("alice@example.com", ["carl@remote.test"])
    await harness.settle()
    by_rcpt = {m.rcpts[0].rcpt.address: m.id for m in harness.service.state}
    ids = [by_rcpt["bob@remote.test"], by_rcpt["carl@remote.test"]]
    capsys.readouterr()

    assert await run_cli(url=harness.http) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and ids[1] in out
    assert "bob@remote.test  deferred" in out
    assert "451 4.7.1 greylisted; next attempt" in out
    assert "in 2 Requests" in out

    # The local stack's state.json names the URL when --url is not given.
    data = tmp_path / "data"
    data.mkdir()
    (data / "state.json").write_text(json.dumps({"pid": os.getpid(), "endpoints": {"queue": {"http": harness.http}}}))
    assert await run_cli(data=str(data), output="json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(m["id"] for m in doc["messages"]) == sorted(ids)

    assert await run_cli(data=str(data), queue_command="show", id=ids[0]) == 0
    out = capsys.readouterr().out
    assert f"Queue ID:    {ids[0]}" in out and "bob@remote.test: deferred, 1 attempt(s)" in out

    mx1.rcpt_reply = None
    assert await run_cli(url=harness.http, queue_command="retry", id=ids[0]) == 0
    assert "retrying 1 recipient(s)" in capsys.readouterr().out
    await harness.settle()
    assert len(mx1.messages) == 1

    mx1.rcpt_reply = "451 4.7.1 greylisted"
    assert await run_cli(url=harness.http, queue_command="retry", all=True) == 0
    assert "retrying 1 message(s), 1 recipient(s)" in capsys.readouterr().out
    await harness.settle()

    assert await run_cli(url=harness.http, queue_command="delete", id=ids[1]) == 0
    assert f"{ids[1]}: deleted" in capsys.readouterr().out
    assert await run_cli(url=harness.http) == 0
    assert "Mail queue is empty" in capsys.readouterr().out

    assert await run_cli(url=harness.http, queue_command="show", id="NOPE") == 1
    assert "no message NOPE" in capsys.readouterr().err


async def test_correo_queue_retry_and_delete_take_several_ids(harness, capsys):
    """``correo queue retry ID1 ID2`` and ``delete ID1 ID2`` act on each;
    an unknown ID is reported and the others are still done."""
    from correo_operator.cli import main

    harness.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await harness.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = "451 4.7.1 greylisted"
    await harness.start()
    for rcpt in ("bob@remote.test", "carl@remote.test", "dora@remote.test"):
        await harness.send("alice@example.com", [rcpt])
    await harness.settle()
    by_rcpt = {m.rcpts[0].rcpt.address: m.id for m in harness.service.state}
    bob, carl, dora = by_rcpt["bob@remote.test"], by_rcpt["carl@remote.test"], by_rcpt["dora@remote.test"]
    capsys.readouterr()

    mx1.rcpt_reply = None
    assert await asyncio.to_thread(main, ["queue", "--url", harness.http, "retry", bob, carl]) == 0
    out = capsys.readouterr().out
    assert f"{bob}: retrying 1 recipient(s)" in out and f"{carl}: retrying 1 recipient(s)" in out
    await harness.settle()
    assert sorted(r for m in mx1.messages for r in m.recipients) == ["bob@remote.test", "carl@remote.test"]

    assert await asyncio.to_thread(main, ["queue", "delete", dora, "NOPE", "--url", harness.http, "-o", "json"]) == 1
    captured = capsys.readouterr()
    start = captured.out.index("[\n")  # (the queue's own log lines share stdout in this test)
    doc = json.loads(captured.out[start:captured.out.index("\n]\n", start) + 2])
    assert doc == [{"id": dora, "deleted": True}, {"id": "NOPE", "error": "no message NOPE in the queue"}]
    assert "no message NOPE" in captured.err
    assert not list(harness.service.state)


@pytest.mark.parametrize("argv, needle", [
    (["retry", "--all", "0123ABC"], "not allowed with"),
    (["retry", "0123ABC", "--all"], "not allowed with"),
    (["retry"], "required"),
    (["delete"], "required"),
])
def test_correo_queue_usage_errors_exit_2(argv, needle, capsys):
    from correo_operator.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["queue", "--url", "http://127.0.0.1:1", *argv])
    assert info.value.code == 2 and needle in capsys.readouterr().err


def test_correo_queue_parses_several_ids():
    from correo_operator.cli import build_parser

    parsed = build_parser().parse_args(["queue", "retry", "A1", "B2", "--data", "d"])
    assert (parsed.id, parsed.all, parsed.data) == (["A1", "B2"], False, "d")
    parsed = build_parser().parse_args(["queue", "--data", "d", "retry", "--all"])
    assert (parsed.id, parsed.all) == ([], True)
    assert build_parser().parse_args(["queue", "delete", "A1", "B2"]).id == ["A1", "B2"]
    assert build_parser().parse_args(["queue", "show", "A1"]).id == "A1"


@pytest.mark.parametrize("kw, needle", [
    (dict(queue_command="retry", all=True, id=["0123ABC"]), "IDs or --all, not both"),
    (dict(queue_command="retry"), "needs a queue ID or --all"),
    (dict(queue_command="delete", id=[]), "needs a queue ID"),
])
def test_correo_queue_usage_errors_when_called_directly(kw, needle, capsys):
    """What argparse refuses is refused by ``admin.cli`` too, before any
    request: --all never silently ignores an ID."""
    assert admin.cli(args(url="http://127.0.0.1:1", **kw)) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("kw, code, needle", [
    (dict(), 2, "give --url"),  # a usage error
    (dict(data="/nonexistent/dir"), 1, "no local stack is running with data in /nonexistent/dir"),
    (dict(url="http://127.0.0.1:1"), 1, "cannot reach the queue"),
])
def test_correo_queue_without_a_queue_says_so(kw, code, needle, capsys):
    assert admin.cli(args(**kw)) == code
    assert needle in capsys.readouterr().err


def test_nothing_running_exits_1_like_correo_status(tmp_path, capsys):
    """A data folder whose ``correo up`` has gone (state.json left behind,
    its pid dead) is "nothing running", as ``correo status`` says."""
    from correo_operator.cli import main

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "state.json").write_text(json.dumps(
        {"pid": gone.pid, "endpoints": {"queue": {"http": "http://127.0.0.1:1"}}}))
    assert main(["queue", "list", "--data", str(tmp_path)]) == 1
    assert f"no local stack is running with data in {tmp_path}" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["queue", "list", "--data", str(empty)]) == main(["status", "--data", str(empty)]) == 1


async def _not_http(reader, writer):
    writer.write(b"220 mx.example.com ESMTP\r\n")
    await writer.drain()
    await reader.read(100)
    writer.close()


@pytest.mark.parametrize("command", [dict(), dict(queue_command="show", id="0123ABC"),
                                     dict(queue_command="retry", id=["0123ABC"]),
                                     dict(queue_command="retry", all=True),
                                     dict(queue_command="delete", id=["0123ABC", "4567DEF"])])
async def test_a_url_that_is_not_the_queue_says_so(command, capsys):
    """Another service's side port (the mailstore's, the relay's) answers
    404 to /queue: not "HTTP 404" but where to look.  An SMTP port the same."""
    other = SidePort(Listen("127.0.0.1", 0), "mailstore", metrics=Registry(), status=dict)
    smtp = await asyncio.start_server(_not_http, "127.0.0.1", 0)
    try:
        for url in (f"http://127.0.0.1:{await other.start()}", f"http://127.0.0.1:{smtp.sockets[0].getsockname()[1]}"):
            assert await run_cli(url=url, **command) == 1
            err = capsys.readouterr().err
            assert f"no correo queue admin API at {url} (is it the queue's side port?)" in err, err
            assert "HTTP 404" not in err
    finally:
        await other.stop()
        smtp.close()
