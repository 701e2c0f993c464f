"""The relay's process-wide DNS answer cache: a sender that opens one
connection per message makes the loopback DNS server answer once per TTL,
not once per connection; negative answers are kept per RFC 2308; failures
are asked again; the cache stays within its bound.  Time passes on an
injected clock, never by sleeping."""
from __future__ import annotations

import asyncio

import pytest
from defences_support import message

from correo_server.defences import DefenceSettings, Defences
from correo_server.mailauth.dnsanswers import NEGATIVE_TTL_WITHOUT_SOA, DnsView
from correo_server.mailauth.dnscache import AnswerCache
from correo_server.mailauth.session import AuthPolicy, MailAuth
from correo_server.scanning.dnsbl import DnsblSettings, DnsblZone

CLIENT = "192.0.2.10"
TTL = 60  # what the test zone gives every record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def cache(resolver, clock):
    return AnswerCache(resolver, clock=clock)


@pytest.fixture
def sender(zone):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    return zone


def mail_auth(cache):
    return MailAuth(cache, "mx.example.com", lambda d: d == "example.com", policy=AuthPolicy(), rng=lambda: 0.0)


async def deliver(auth: MailAuth, sender: str = "alice@sender.example"):
    """One connection, one message: SPF at MAIL FROM, DKIM and DMARC at the end of DATA."""
    conn = auth.connection(CLIENT)
    mail = await conn.at_mail("mail.sender.example", sender)
    assert mail.reply is None, mail.reply
    return await conn.at_data(mail, message(sender=sender))


async def test_connections_share_answers(sender, cache):
    auth = mail_auth(cache)
    first = await deliver(auth)
    second = await deliver(auth)
    assert [r.result for r in first.dmarc] == [r.result for r in second.dmarc] == ["pass"]
    assert sender.asked("sender.example", "TXT") == 1
    assert sender.asked("_dmarc.sender.example", "TXT") == 1
    assert sender.asked("mail.sender.example", "TXT") == 1  # the HELO identity, NXDOMAIN: kept too


async def test_asked_again_when_the_ttl_has_passed(sender, cache, clock):
    auth = mail_auth(cache)
    await deliver(auth)
    clock.now += TTL - 1
    await deliver(auth)
    assert sender.asked("sender.example", "TXT") == 1
    clock.now += 2
    sender.clear()
    sender.txt("sender.example", "v=spf1 -all")  # the domain changed its record meanwhile
    conn = auth.connection(CLIENT)
    verdict = await conn.at_mail("mail.sender.example", "alice@sender.example")
    assert sender.asked("sender.example", "TXT") == 1
    assert verdict.mailfrom.result == "fail" and verdict.reply.code == 550


async def test_one_connection_sees_one_dns(sender, cache, clock):
    """A connection keeps what it saw even when the shared entry expires mid-way."""
    view = DnsView(cache)
    before = await view.lookup("sender.example", "TXT")
    clock.now += TTL + 1
    sender.clear()
    assert await view.lookup("sender.example", "TXT") == before
    assert (await DnsView(cache).lookup("sender.example", "TXT")).status == "nxdomain"


async def test_negative_answer_kept_for_the_soa_minimum(zone, cache, clock):
    zone.soa("sender.example", ttl=3600, minimum=30)
    zone.exists("sender.example")
    assert (await cache.lookup("nowhere.sender.example", "TXT")).status == "nxdomain"
    assert (await cache.lookup("sender.example", "TXT")).status == "nodata"
    clock.now += 29
    await cache.lookup("nowhere.sender.example", "TXT")
    await cache.lookup("sender.example", "TXT")
    assert zone.asked("nowhere.sender.example") == 1 and zone.asked("sender.example") == 1
    clock.now += 2
    await cache.lookup("nowhere.sender.example", "TXT")
    await cache.lookup("sender.example", "TXT")
    assert zone.asked("nowhere.sender.example") == 2 and zone.asked("sender.example") == 2


async def test_negative_answer_kept_for_the_soa_ttl_when_smaller(zone, cache, clock):
    zone.soa("sender.example", ttl=10, minimum=300)
    await cache.lookup("nowhere.sender.example", "TXT")
    clock.now += 11
    await cache.lookup("nowhere.sender.example", "TXT")
    assert zone.asked("nowhere.sender.example") == 2


async def test_negative_answer_without_soa_kept_briefly(zone, cache, clock):
    await cache.lookup("nowhere.example", "TXT")
    clock.now += NEGATIVE_TTL_WITHOUT_SOA - 1
    await cache.lookup("nowhere.example", "TXT")
    assert zone.asked("nowhere.example") == 1
    clock.now += 2
    await cache.lookup("nowhere.example", "TXT")
    assert zone.asked("nowhere.example") == 2


async def test_server_failure_is_asked_again(zone, cache):
    zone.fail("flaky.example")
    assert (await cache.lookup("flaky.example", "TXT")).temporary
    assert (await cache.lookup("flaky.example", "TXT")).temporary
    assert zone.asked("flaky.example") == 2
    assert len(cache) == 0


async def test_concurrent_askers_share_one_query(sender, cache):
    answers = await asyncio.gather(*(DnsView(cache).lookup("sender.example", "TXT") for _ in range(8)))
    assert len({a.records for a in answers}) == 1 and answers[0].ok
    assert sender.asked("sender.example", "TXT") == 1


async def test_a_cancelled_asker_does_not_cancel_the_query(sender, cache):
    first = asyncio.ensure_future(cache.lookup("sender.example", "TXT"))
    second = asyncio.ensure_future(cache.lookup("sender.example", "TXT"))
    await asyncio.sleep(0)
    first.cancel()
    assert (await second).ok
    assert sender.asked("sender.example", "TXT") == 1


async def test_the_bound_holds(zone, resolver, clock):
    cache = AnswerCache(resolver, max_entries=3, clock=clock)
    for i in range(5):
        zone.txt(f"d{i}.example", "v=spf1 -all")
        await cache.lookup(f"d{i}.example", "TXT")
    assert len(cache) == 3
    await cache.lookup("d4.example", "TXT")  # kept: the most recent
    await cache.lookup("d2.example", "TXT")  # kept
    await cache.lookup("d0.example", "TXT")  # dropped first: asked again
    assert [zone.asked(f"d{i}.example") for i in range(5)] == [2, 1, 1, 1, 1]
    assert len(cache) == 3


def test_a_bound_below_one_is_refused(resolver):
    with pytest.raises(ValueError, match="max_entries"):
        AnswerCache(resolver, max_entries=0)


async def test_sender_checks_and_blocklists_share_the_cache(zone, resolver):
    zone.a("10.2.0.192.bl.example", "127.0.0.2")
    zone.txt("sender.example", "v=spf1 -all")
    settings = DefenceSettings(AuthPolicy(), DnsblSettings((DnsblZone("bl.example"),)))
    defences = Defences(resolver, "mx.example.com", lambda d: False, settings)
    assert defences.auth.cache is defences.dnsbl.cache is defences.dns
    for _ in range(2):
        conn = defences.connection(CLIENT)
        assert (await conn.at_mail("mail.sender.example", "alice@sender.example")).code == 550
    assert zone.asked("sender.example", "TXT") == 1
    assert (await defences.dnsbl.check(CLIENT)).reply.code == 554
    before = zone.asked("10.2.0.192.bl.example")
    defences.dnsbl._cache.clear()  # the verdict cache; the answers stay in the shared one
    await defences.dnsbl.check(CLIENT)
    assert zone.asked("10.2.0.192.bl.example") == before
