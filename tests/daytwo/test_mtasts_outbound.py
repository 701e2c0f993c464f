"""The queue honours receivers' MTA-STS policies (RFC 8461): a loopback MX,
a loopback HTTPS policy host with certificates from a private CA, the TXT
record from a loopback DNS server; nothing leaves the machine."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest
import structlog
from aiohttp import web
from dnslib import TXT
from queue_support import message

from correo_server.config import MtaStsClient

DOMAIN = "remote.test"
MX = "mx1.remote.test"
POLICY_HOST = f"mta-sts.{DOMAIN}"


def policy_text(mode: str, mx: str = MX, max_age: int = 86400) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


class PolicyHost:
    """``https://mta-sts.remote.test/.well-known/mta-sts.txt`` on loopback."""

    def __init__(self) -> None:
        self.body = ""
        self.status = 200
        self.content_type = "text/plain"
        self.requests: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.host}{request.path}")
        if request.path != "/.well-known/mta-sts.txt":
            return web.Response(status=404)
        return web.Response(status=self.status, body=self.body.encode(), content_type=self.content_type)

    async def start(self, ssl_context) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def policy_host(test_ca, dns_zone):
    host = PolicyHost()
    await host.start(test_ca.server_context(POLICY_HOST))
    dns_zone.a(POLICY_HOST, "127.0.0.1")
    yield host
    await host.stop()


def announce(zone, policy_id: str) -> None:
    zone._add(f"_mta-sts.{DOMAIN}", "TXT", TXT(f"v=STSv1; id={policy_id};"))


async def start_queue(harness, test_ca, policy_host):
    return await harness.start(mta_sts=MtaStsClient(ca_file=str(test_ca.ca_file), https_port=policy_host.port,
                                                    fetch_timeout_seconds=5))


async def receiver(harness, test_ca, policy_host, *, cert: str | None = MX, mode: str = "enforce",
                   policy_id: str | None = "v1", **policy) -> object:
    """remote.test: one MX (127.0.0.2) with a certificate for ``cert`` (None: no
    TLS), its policy on the policy host, announced as ``policy_id`` (None: not
    announced); then the queue starts.  Returns the MX's handler."""
    harness.zone.mx(DOMAIN, (10, MX))
    mx1 = await harness.add_mx(MX, "127.0.0.2", tls=test_ca.server_context(cert) if cert else None)
    policy_host.body = policy_text(mode, **policy)
    if policy_id:
        announce(harness.zone, policy_id)
    await start_queue(harness, test_ca, policy_host)
    return mx1


async def recipient(harness, address: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{harness.http}/queue") as rsp:
            listing = await rsp.json()
        for msg in listing["messages"]:
            async with session.get(f"{harness.http}/queue/{msg['id']}") as rsp:
                shown = await rsp.json()
            for r in shown["recipients"]:
                if r["address"] == address:
                    return {"id": msg["id"], **r}
    raise AssertionError(f"{address} is not in the queue")


async def queue_show(harness, msg_id: str) -> str:
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "correo_operator.cli", "queue", "show", msg_id, "--url", harness.http],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_enforce_with_a_mismatching_certificate_defers_and_says_why(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, cert="other.example")

    with structlog.testing.capture_logs() as events:
        replies = await harness.send("alice@example.com", ["bob@remote.test"])
        assert replies["bob@remote.test"].startswith("250")
        await harness.settle()

    assert mx1.messages == []  # never handed over without a verified certificate
    rcpt = await recipient(harness, "bob@remote.test")
    assert rcpt["state"] == "deferred"
    reason = rcpt["history"][-1]["reply"]
    assert reason.startswith("451 4.7.5 MTA-STS policy of remote.test (enforce, id v1) not met by mx1.remote.test")
    assert "certificate verify failed" in reason and "mx1.remote.test" in reason
    # Reported like any other delivery error: the status document and `correo queue show`.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{harness.http}/status") as rsp:
            status = await rsp.json()
    errors = status["domains"]["example.com"]["lastErrors"]
    assert errors[0]["destination"] == MX and "MTA-STS policy of remote.test" in errors[0]["error"]
    shown = await queue_show(harness, rcpt["id"])
    assert "MTA-STS policy of remote.test (enforce, id v1) not met by mx1.remote.test" in shown
    assert any(e["event"] == "mta_sts_refused" and e["mx"] == MX for e in events)
    assert policy_host.requests == [f"{POLICY_HOST}:{policy_host.port}/.well-known/mta-sts.txt"]


async def test_enforce_with_a_matching_certificate_delivers_over_verified_tls(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host)

    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert [(m.recipients, m.tls) for m in mx1.messages] == [(["bob@remote.test"], True)]


async def test_enforce_skips_an_mx_the_policy_does_not_list_and_uses_the_next(harness, test_ca, policy_host):
    harness.zone.mx(DOMAIN, (10, "rogue.elsewhere.test"), (20, MX))
    rogue = await harness.add_mx("rogue.elsewhere.test", "127.0.0.3", tls=test_ca.server_context("rogue.elsewhere.test"))
    mx1 = await harness.add_mx(MX, "127.0.0.2", tls=test_ca.server_context(MX))
    policy_host.body = policy_text("enforce", mx="*.remote.test")
    announce(harness.zone, "v1")
    await start_queue(harness, test_ca, policy_host)

    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert rogue.connections == 0
    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]


async def test_enforce_defers_when_the_mx_offers_no_starttls(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, cert=None)  # no TLS at all

    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert mx1.messages == []
    rcpt = await recipient(harness, "bob@remote.test")
    assert rcpt["state"] == "deferred"
    assert rcpt["history"][-1]["reply"] == ("451 4.7.4 MTA-STS policy of remote.test (enforce, id v1) not met by "
                                            "mx1.remote.test: it does not offer STARTTLS")


async def test_testing_mode_delivers_despite_a_bad_certificate_and_logs_it(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, cert="other.example", mode="testing", policy_id="t1")

    with structlog.testing.capture_logs() as events:
        await harness.send("alice@example.com", ["bob@remote.test"])
        await harness.settle()

    assert [(m.recipients, m.tls) for m in mx1.messages] == [(["bob@remote.test"], True)]  # still encrypted
    reports = [e for e in events if e["event"] == "mta_sts_report"]
    assert reports and reports[0]["mode"] == "testing" and reports[0]["mx"] == MX
    assert "certificate verify failed" in reports[0]["problem"]
    assert reports[0]["action"] == "delivering anyway (testing mode)"


async def test_without_a_txt_record_no_policy_is_fetched(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, cert="other.example", policy_id=None)  # there, unannounced

    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()

    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]
    assert policy_host.requests == []


@pytest.mark.parametrize("problem", ["404", "redirect", "content-type", "garbage"])
async def test_a_policy_that_cannot_be_fetched_counts_as_none(harness, test_ca, policy_host, problem):
    policy_host.status = {"404": 404, "redirect": 302}.get(problem, 200)
    policy_host.content_type = "text/html" if problem == "content-type" else "text/plain"
    mx1 = await receiver(harness, test_ca, policy_host, cert="other.example")
    if problem == "garbage":
        policy_host.body = "mode: enforce\r\n"

    with structlog.testing.capture_logs() as events:
        await harness.send("alice@example.com", ["bob@remote.test"])
        await harness.settle()
        await harness.send("alice@example.com", ["carl@remote.test"], message(subject="two"))
        await harness.settle()

    assert sorted(r for m in mx1.messages for r in m.recipients) == ["bob@remote.test", "carl@remote.test"]
    failed = [e for e in events if e["event"] == "mta_sts_fetch_failed"]
    assert len(failed) == 1 and failed[0]["using"].startswith("no policy")  # not fetched again per message
    assert len(policy_host.requests) == 1


async def test_the_policy_cache_survives_a_restart_and_outlives_the_txt_record(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, max_age=86400)
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert len(mx1.messages) == 1
    cached = json.loads((harness.root / "spool" / "mta-sts" / "remote.test.json").read_text())
    assert cached["id"] == "v1" and "mode: enforce" in cached["policy"]

    # An attacker strips the TXT record and the policy host, and swaps the MX's certificate.
    harness.zone.clear()
    harness.zone.mx(DOMAIN, (10, MX))
    harness.zone.a(MX, "127.0.0.2")
    await policy_host.stop()
    for server in harness.servers[1:]:
        server.close()
    mx2 = await harness.add_mx(MX, "127.0.0.2", tls=test_ca.server_context("attacker.example"))
    await harness.restart()
    await harness.send("alice@example.com", ["carl@remote.test"], message(subject="two"))
    await harness.settle()
    assert mx2.messages == []
    rcpt = await recipient(harness, "carl@remote.test")
    assert "MTA-STS policy of remote.test (enforce, id v1)" in rcpt["history"][-1]["reply"]

    # Once max_age has passed without the TXT record, the policy no longer applies.
    harness.clock.advance(86400 + 1)
    await harness.runner.retry(rcpt["id"])
    await harness.settle()
    assert [m.recipients for m in mx2.messages] == [["carl@remote.test"]]


async def test_a_new_policy_id_is_fetched_and_replaces_the_cached_policy(harness, test_ca, policy_host):
    mx1 = await receiver(harness, test_ca, policy_host, cert="other.example")
    await harness.send("alice@example.com", ["bob@remote.test"])
    await harness.settle()
    assert mx1.messages == []

    # The receiver relaxes its policy and announces it with a new id.
    policy_host.body = policy_text("none")
    harness.zone.clear()
    harness.zone.mx(DOMAIN, (10, MX))
    harness.zone.a(MX, "127.0.0.2")
    harness.zone.a(POLICY_HOST, "127.0.0.1")
    announce(harness.zone, "v2")
    harness.service.runner.resolver.resolver.cache.flush()  # the TXT answer's TTL has passed
    rcpt = await recipient(harness, "bob@remote.test")
    await harness.runner.retry(rcpt["id"])
    await harness.settle()
    assert [m.recipients for m in mx1.messages] == [["bob@remote.test"]]
    assert len(policy_host.requests) == 2
