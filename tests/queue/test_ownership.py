"""Every queued message belongs to a hosted domain: the one whose retry
policy it follows and under which ``/status`` counts it, so that no queued
message is missing from every domain's figures."""
from __future__ import annotations

import json
from dataclasses import replace

import aiohttp
import pytest
from queue_support import message

from correo_server.config import Domain, RetryPolicy, ServerConfig, Smarthost
from correo_server.queue import schedule
from correo_server.queue.outbound import route_for
from correo_server.queue.ownership import owner_of, owning_domain
from correo_server.queue.records import Envelope, Rcpt
from correo_server.queue.spool import encode_message

FAST = RetryPolicy(initial_delay_seconds=60, max_delay_seconds=60, warn_after_seconds=600,
                   give_up_after_seconds=1800)
SLOW = RetryPolicy(initial_delay_seconds=900)
CFG = ServerConfig(name="t", hostname="mx.example.com",
                   domains=(Domain("example.com", aliases=("example.net",), retry=FAST,
                                   smarthost=Smarthost("smarthost.example.com")),
                            Domain("other.org", retry=SLOW)))


def remote(address: str, original: str = "") -> Rcpt:
    return Rcpt(address, original or address, False)


def local(address: str) -> Rcpt:
    return Rcpt(address, address, True)


def name(domain) -> str | None:
    return domain.name if domain is not None else None


class TestOwner:
    def test_a_hosted_sender_owns_it_in_any_of_its_domain_names(self):
        assert name(owning_domain(CFG, "alice@example.net", [local("erin@other.org")])) == "example.com"

    def test_else_the_first_hosted_recipient(self):
        rcpts = [remote("dave@remote.test", "dave@example.com"), local("erin@other.org")]
        assert name(owning_domain(CFG, "", rcpts)) == "other.org"
        assert name(owning_domain(CFG, "x@remote.test", rcpts)) == "other.org"

    def test_else_the_mailbox_that_forwarded_it(self):
        # a bounce arriving for dave@other.org, who forwards to a remote address
        assert name(owning_domain(CFG, "", [remote("dave@remote.test", "dave@other.org")])) == "other.org"

    def test_else_the_domain_of_the_message_a_notice_is_about(self):
        assert name(owning_domain(CFG, "", [remote("x@remote.test")], created_by="other.org")) == "other.org"

    def test_else_the_first_configured_domain(self):
        assert name(owning_domain(CFG, "", [remote("x@remote.test")])) == "example.com"
        assert name(owning_domain(CFG, "", [remote("x@remote.test")], created_by="gone.example")) == "example.com"

    def test_none_only_without_domains(self):
        assert owning_domain(replace(CFG, domains=()), "", [remote("x@remote.test")]) is None

    @pytest.mark.parametrize("recorded", ["", "gone.example"])
    def test_a_spooled_message_without_a_hosted_owner_gets_one(self, recorded):
        env = Envelope(id="A", sender="", recipients=(remote("x@remote.test", "dave@other.org"),), arrival=0.0,
                       size=1, domain=recorded)
        assert name(owner_of(CFG, env)) == "other.org"

    def test_retry_policy_and_route_follow_the_same_owner(self):
        env = Envelope(id="A", sender="", recipients=(remote("x@remote.test"),), arrival=0.0, size=1)
        assert name(owner_of(CFG, env)) == "example.com"
        assert schedule.policy_for(CFG, env) == FAST  # not the default schedule
        assert route_for(CFG, env, env.recipients[0]).kind == "smarthost"
        forwarded = replace(env, recipients=(remote("x@remote.test", "dave@other.org"),))
        assert schedule.policy_for(CFG, forwarded) == SLOW
        assert route_for(CFG, forwarded, forwarded.recipients[0]).kind == "mx"


async def greylisting_mx(h, refuse: str = ""):
    h.zone.mx("remote.test", (10, "mx1.remote.test"))
    mx1 = await h.add_mx("mx1.remote.test", "127.0.0.2")
    mx1.rcpt_reply = lambda rcpt: ("550 5.1.1 no such user" if refuse and rcpt.startswith(refuse)
                                   else "451 4.7.1 greylisted")
    return mx1


async def status(h) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{h.http}/status") as resp:
            return await resp.json()


async def test_a_null_sender_message_to_remote_recipients_is_counted_and_follows_the_domain_policy(harness):
    """What QA saw: such a message sat in the queue while /status said
    DEFERRED 0 for every domain, and it was retried on the default schedule."""
    await greylisting_mx(harness)
    await harness.start(retry=FAST)
    t0 = harness.clock.now()
    replies = await harness.send("", ["x@remote.test"], message(sender="MAILER-DAEMON@example.com",
                                                               to="x@remote.test"))
    assert all(r.startswith("250 ") for r in replies.values())
    await harness.run_until(t0 + 29 * 60 + 30)
    (msg,) = list(harness.service.state)
    assert msg.env.domain == "example.com"
    assert msg.rcpts[0].attempt_count == 30  # every minute (the domain's policy), not after 5, 10, 20 min
    doc = await status(harness)
    ex = doc["domains"]["example.com"]
    assert (ex["active"], ex["deferred"], ex["oldestDeferredAgeSeconds"]) == (1, 1, 29 * 60 + 30)
    assert [d["recipient"] for d in ex["delayed"]] == ["x@remote.test"]  # warnAfter is 10 min
    assert doc["domains"]["other.org"]["active"] == 0
    # ...and it gives up on the domain's schedule (30 min); no notice to <>.
    await harness.run_until(t0 + 31 * 60)
    assert not list(harness.service.state)
    assert (await status(harness))["domains"]["example.com"]["bounced"] == 1


async def test_a_notice_to_a_remote_sender_belongs_to_the_domain_of_the_forwarding_mailbox(harness):
    """x@remote.test writes to dave@example.com, who forwards to
    dave@remote.test, which refuses: the failure notice goes back to
    x@remote.test (greylisted) and is counted under example.com."""
    await greylisting_mx(harness, refuse="dave")
    await harness.start()
    await harness.send("x@remote.test", ["dave@example.com"], message(sender="x@remote.test", to="dave@example.com"))
    await harness.settle()
    (notice,) = list(harness.service.state)
    assert notice.env.notice == "failed" and notice.env.sender == ""
    assert [r.rcpt.address for r in notice.rcpts] == ["x@remote.test"]
    assert notice.env.domain == "example.com"
    ex = (await status(harness))["domains"]["example.com"]
    assert (ex["active"], ex["deferred"]) == (1, 1)


async def test_messages_spooled_without_a_hosted_owner_are_adopted_at_start(harness):
    """Spooled before this rule existed (no domain), or their domain was
    removed since: after a restart they are counted, and show a domain."""
    await greylisting_mx(harness)
    await harness.start(retry=FAST)
    await harness.service.stop()
    now = harness.clock.now()
    for qid, recorded in (("00000000001AAA", ""), ("00000000002BBB", "gone.example")):
        env = Envelope(id=qid, sender="", recipients=(remote("x@remote.test"),), arrival=now, size=10,
                       domain=recorded)
        (harness.root / "spool" / "msg" / qid).write_bytes(encode_message(env, message()))
    harness.service = None
    await harness.start(retry=FAST)
    await harness.settle()
    assert sorted(m.env.domain for m in harness.service.state) == ["example.com", "example.com"]
    ex = (await status(harness))["domains"]["example.com"]
    assert (ex["active"], ex["deferred"]) == (2, 2)
    assert "gone.example" not in (await status(harness))["domains"]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{harness.http}/queue") as resp:
            listing = json.loads(await resp.text())
    assert [m["domain"] for m in listing["messages"]] == ["example.com", "example.com"]
