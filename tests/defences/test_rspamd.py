"""The rspamd client against a real rspamd (Debian's), started once for the
session with its own minimal configuration: each action rspamd reports maps
to its reply or to Junk, and a missing rspamd to the configured fail mode."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from defences_support import EICAR, GTUBE, GTUBE_ADD_HEADER, GTUBE_REWRITE_SUBJECT, free_port, message

from correo_server.mailauth import headers
from correo_server.scanning import rspamd as rspamdmod
from correo_server.scanning.rspamd import Envelope, RspamdClient, RspamdSettings

ENVELOPE = Envelope("alice@sender.example", ["bob@example.com", "carol@example.com"], ip="192.0.2.10",
                    helo="mail.sender.example", queue_id="TESTQUEUEID1", hostname="mx.example.com")


@pytest.fixture
async def client(rspamd):
    c = RspamdClient(RspamdSettings(rspamd.url, timeout_seconds=30))
    yield c
    await c.close()


async def test_gtube_is_refused_with_5_7_1(client):
    result = await client.check(message(body=f"{GTUBE}\r\n"), ENVELOPE)
    assert result.action == "reject"
    assert (result.reply.code, result.reply.status, result.reason) == (550, "5.7.1", "spam")
    assert "GTUBE" in result.symbols


async def test_a_clean_message_passes_with_headers(client):
    msg = message(body="Lunch at noon?\r\n")
    result = await client.check(msg, ENVELOPE)
    assert (result.action, result.reply, result.junk, result.reason) == ("no action", None, False, "clean")
    out = rspamdmod.apply(msg, result)
    assert headers.values(out, "X-Spam-Flag") == ["NO"]
    assert headers.values(out, "X-Spam-Action") == ["no action"]
    assert headers.values(out, "X-Spam-Status")[0].startswith("No, score=")
    assert out.endswith(msg.split(b"\r\n\r\n", 1)[1]), "the body passes byte for byte"


async def test_add_header_goes_to_junk_with_spam_headers(client):
    msg = message(body=f"{GTUBE_ADD_HEADER}\r\n", extra="X-Spam-Flag: NO\r\n")
    result = await client.check(msg, ENVELOPE)
    assert (result.action, result.reply, result.junk) == ("add header", None, True)
    out = rspamdmod.apply(msg, result)
    assert headers.values(out, "X-Spam-Flag") == ["YES"], "the sender's own X-Spam-Flag is replaced"
    assert "GTUBE" in headers.values(out, "X-Spam-Symbols")[0]


async def test_rewrite_subject_goes_to_junk_with_the_new_subject(client):
    msg = message(subject="Cheap watches", body=f"{GTUBE_REWRITE_SUBJECT}\r\n")
    result = await client.check(msg, ENVELOPE)
    assert (result.action, result.junk) == ("rewrite subject", True)
    out = rspamdmod.apply(msg, result)
    [subject] = headers.values(out, "Subject")
    assert "Cheap watches" in subject and subject != "Cheap watches"


@pytest.mark.parametrize("action,reason", [("soft reject", "spam_soft_reject"), ("greylist", "greylist")])
async def test_soft_reject_and_greylist_defer_with_4_7_1(client, action, reason):
    result = await client.check(message(extra=f"X-Correo-Test-Action: {action}\r\n"), ENVELOPE)
    assert result.action == action
    assert (result.reply.code, result.reply.status, result.reply.reason) == (451, "4.7.1", reason)


async def test_a_virus_symbol_refuses_whatever_the_score(client):
    result = await client.check(message(body=f"{EICAR}\r\n"), ENVELOPE)
    assert result.viruses == ("EICAR_TEST_VIRUS",)
    assert result.action == "no action", "rspamd itself would have let it through"
    assert (result.reply.code, result.reply.status, result.reason) == (550, "5.7.1", "virus")
    assert "EICAR_TEST_VIRUS" in result.reply.text


async def test_the_controller_wants_the_password(rspamd):
    good = RspamdClient(RspamdSettings(rspamd.controller_url, password=rspamd.password))
    bad = RspamdClient(RspamdSettings(rspamd.controller_url, password="wrong"))
    try:
        assert (await good.check(message(body=f"{GTUBE}\r\n"), ENVELOPE)).action == "reject"
        refused = await bad.check(message(), ENVELOPE)
        assert not refused.scanned and "401" in refused.error
        assert (refused.reply.code, refused.reply.status) == (451, "4.7.1")
    finally:
        await good.close()
        await bad.close()


async def test_rspamd_stopped_tempfails_by_default():
    client = RspamdClient(RspamdSettings(f"http://127.0.0.1:{free_port()}", timeout_seconds=5))
    try:
        result = await client.check(message(), ENVELOPE)
    finally:
        await client.close()
    assert not result.scanned and result.reason == "unavailable"
    assert (result.reply.code, result.reply.status) == (451, "4.7.1")
    assert "cannot reach rspamd" in result.error


async def test_rspamd_stopped_with_fail_mode_accept_delivers_unscanned():
    client = RspamdClient(RspamdSettings(f"http://127.0.0.1:{free_port()}", on_failure="accept"))
    try:
        result = await client.check(message(), ENVELOPE)
    finally:
        await client.close()
    assert result.reply is None and not result.scanned and not result.junk
    msg = message(extra="X-Spam-Flag: NO\r\n")
    assert headers.values(rspamdmod.apply(msg, result), "X-Spam-Flag") == [], "no verdict claimed, none kept"


async def test_a_silent_rspamd_times_out_into_the_fail_mode():
    async def stall(reader, writer):  # reads the request, never answers
        while await reader.read(65536):
            pass
        writer.close()
    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RspamdClient(RspamdSettings(f"http://127.0.0.1:{port}", timeout_seconds=0.5))
    try:
        started = time.monotonic()
        result = await client.check(message(), ENVELOPE)
        assert time.monotonic() - started < 10
    finally:
        await client.close()
        server.close()
    assert not result.scanned and "did not answer" in result.error
    assert result.reply.code == 451


async def test_a_stopped_rspamd_is_the_fail_mode(tmp_path, _dns_server):
    """An rspamd of this test's own: scanning, then stopped (the same client
    tempfails, or accepts when told to)."""
    from defences_support import rspamd_binary, start_rspamd
    if rspamd_binary() is None:
        pytest.skip("rspamd is not installed (Debian: apt-get install rspamd)")
    server = start_rspamd(tmp_path / "rspamd", _dns_server.port)
    tempfail = RspamdClient(RspamdSettings(server.url, timeout_seconds=10))
    accept = RspamdClient(RspamdSettings(server.url, timeout_seconds=10, on_failure="accept"))
    try:
        assert (await tempfail.check(message(body=f"{GTUBE}\r\n"), ENVELOPE)).action == "reject"
        server.stop()
        down = await tempfail.check(message(body=f"{GTUBE}\r\n"), ENVELOPE)
        assert (down.scanned, down.reply.code, down.reply.status) == (False, 451, "4.7.1")
        passed = await accept.check(message(body=f"{GTUBE}\r\n"), ENVELOPE)
        assert (passed.scanned, passed.reply) == (False, None)
    finally:
        await tempfail.close()
        await accept.close()
        server.stop()


def test_unknown_or_broken_answers_are_the_fail_mode():
    settings = RspamdSettings("http://x")
    assert rspamdmod.decide({"score": 1}, settings).reply.code == 451
    assert rspamdmod.decide({"action": "launch missiles"}, settings).reply.code == 451
    assert rspamdmod.decide(json.loads('{"action": "no action"}'), settings).reply is None
    with pytest.raises(ValueError):
        RspamdSettings("http://x", on_failure="shrug")


def test_rspamd_may_ask_for_header_changes():
    body = {"action": "no action", "score": 0.5, "required_score": 15,
            "milter": {"add_headers": {"X-Rspamd-Server": {"value": "scanner-1", "order": 0}},
                       "remove_headers": {"X-Internal": 0}}}
    result = rspamdmod.decide(body, RspamdSettings("http://x"))
    out = rspamdmod.apply(message(extra="X-Internal: secret\r\n"), result)
    assert headers.values(out, "X-Rspamd-Server") == ["scanner-1"]
    assert headers.values(out, "X-Internal") == []
