"""The relay's SPF result cache: a sender that opens one connection per
message gets the verdict its first connection got, without the records being
evaluated again, and never another client's, domain's or HELO name's
verdict; a verdict lasts only while the DNS answers it came from do (a
changed record is seen once its TTL has passed); DNS failures are never
kept; the cache stays within its bound.  Time passes on an injected clock."""
from __future__ import annotations

import pytest

from correo_server.mailauth import spf
from correo_server.mailauth.dnsanswers import Answer
from correo_server.mailauth.dnscache import AnswerCache
from correo_server.mailauth.session import AuthPolicy, MailAuth
from correo_server.mailauth.spfcache import SpfCache

CLIENT = "192.0.2.10"
OTHER_CLIENT = "198.51.100.7"
HELO = "mail.sender.example"
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
def evaluations(monkeypatch):
    """How many times pyspf evaluated a record (each round counts)."""
    calls = []
    real = spf.evaluate

    def counting(*args, **kwargs):
        calls.append(args[:3])
        return real(*args, **kwargs)
    monkeypatch.setattr(spf, "evaluate", counting)
    return calls


def mail_auth(cache, **kwargs):
    return MailAuth(cache, "mx.example.com", lambda d: d == "example.com", policy=AuthPolicy(), rng=lambda: 0.0,
                    **kwargs)


async def at_mail(auth: MailAuth, sender: str = "alice@sender.example", *, client: str = CLIENT,
                  helo: str = HELO):
    """A new connection's MAIL FROM."""
    return await auth.connection(client).at_mail(helo, sender)


async def test_next_connection_gets_the_same_verdict_without_evaluating(zone, cache, evaluations):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt(HELO, "v=spf1 a -all")
    zone.a(HELO, CLIENT)
    auth = mail_auth(cache)
    first = await at_mail(auth)
    evaluated = len(evaluations)
    second = await at_mail(auth)
    assert first == second
    assert (second.mailfrom.result, second.helo.result) == ("pass", "pass")
    assert len(evaluations) == evaluated  # both identities came from the cache
    assert auth.spf_cache.hits == 2


async def test_another_client_gets_its_own_verdict(zone, cache):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    refused = await at_mail(auth, client=OTHER_CLIENT)
    assert refused.mailfrom.result == "fail" and refused.reply.code == 550
    assert (await at_mail(auth)).mailfrom.result == "pass"


async def test_another_domain_gets_its_own_verdict(zone, cache):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt("other.example", "v=spf1 -all")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    verdict = await at_mail(auth, "alice@other.example")
    assert (verdict.mailfrom.result, verdict.mailfrom.domain) == ("fail", "other.example")
    # an address without a domain is not the domain of that name
    assert (await at_mail(auth, "sender.example")).mailfrom.result == "none"


async def test_another_helo_gets_its_own_verdict(zone, cache):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt(HELO, "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt("forged.example", "v=spf1 -all")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).helo.result == "pass"
    verdict = await at_mail(auth, helo="forged.example")
    assert verdict.helo.result == "fail" and verdict.reply.code == 550
    assert (await at_mail(auth)).reply is None


async def test_another_sender_at_the_domain_gets_the_verdict_under_its_own_name(zone, cache, evaluations):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache)
    await at_mail(auth)
    evaluated = len(evaluations)
    verdict = await at_mail(auth, "bob@Sender.Example")
    assert (verdict.mailfrom.result, verdict.mailfrom.subject) == ("pass", "bob@Sender.Example")
    assert not [e for e in evaluations[evaluated:] if e[1]]  # the MAIL FROM identity was not evaluated again


async def test_a_record_with_macros_is_evaluated_for_each_sender(zone, cache):
    zone.txt("sender.example", "v=spf1 exists:%{l}.allowed.sender.example -all")
    zone.a("alice.allowed.sender.example", "127.0.0.2")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    assert (await at_mail(auth, "mallory@sender.example")).mailfrom.result == "fail"
    assert (await at_mail(auth)).mailfrom.result == "pass"


async def test_a_changed_record_is_seen_once_its_ttl_has_passed(zone, cache, clock):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    zone.clear()
    zone.txt("sender.example", "v=spf1 -all")  # the domain withdrew the permission
    clock.now += TTL - 1
    assert (await at_mail(auth)).mailfrom.result == "pass"  # the answer may still be kept, so may the verdict
    clock.now += 2
    verdict = await at_mail(auth)
    assert verdict.mailfrom.result == "fail" and verdict.reply.code == 550


async def test_a_verdict_expires_with_the_first_of_its_answers(zone, cache, clock):
    """``include:`` brings a second answer; when it goes, the verdict goes."""
    zone.txt("sender.example", "v=spf1 include:spf.provider.example -all")
    zone.txt("spf.provider.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    cache._answers.pop(("spf.provider.example", "TXT"))  # as if it had been dropped (bound) or expired
    zone.clear()
    zone.txt("sender.example", "v=spf1 include:spf.provider.example -all")
    zone.txt("spf.provider.example", "v=spf1 -all")
    assert (await at_mail(auth)).mailfrom.result == "fail"


async def test_dns_failures_are_not_kept(zone, cache):
    zone.fail("sender.example")
    auth = mail_auth(cache)
    deferred = await at_mail(auth)
    assert deferred.mailfrom.result == "temperror" and deferred.reply.code == 451
    zone.clear()
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    assert (await at_mail(auth)).mailfrom.result == "pass"


async def test_a_result_whose_explanation_reads_the_clock_is_not_kept(cache):
    """The time macro (allowed in explanations only) would make a kept
    refusal's text stale."""
    why = Answer("ok", ((b"Refused at %{t}",),))
    record = Answer("ok", ((b"v=spf1 -all exp=why.sender.example",),))
    cache._answers[("sender.example", "TXT")] = (cache.clock() + TTL, record)
    cache._answers[("why.sender.example", "TXT")] = (cache.clock() + TTL, why)
    spf_cache = SpfCache(cache)
    result = spf.SpfResult("mailfrom", "alice@sender.example", "sender.example", "fail", "Refused at 1000")
    used = {("sender.example", "TXT"), ("why.sender.example", "TXT")}
    answers = {("sender.example", "TXT"): record, ("why.sender.example", "TXT"): why}
    spf_cache.put(CLIENT, "alice@sender.example", HELO, "mx.example.com", result, used, answers)
    assert len(spf_cache) == 0
    del answers[("why.sender.example", "TXT")], cache._answers[("why.sender.example", "TXT")]
    spf_cache.put(CLIENT, "alice@sender.example", HELO, "mx.example.com", result, {("sender.example", "TXT")},
                  answers)
    assert spf_cache.get(CLIENT, "bob@sender.example", HELO, "mx.example.com").subject == "bob@sender.example"


async def test_a_helo_name_that_is_not_a_domain_is_not_looked_at_again(zone, cache, evaluations):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache)
    first = await at_mail(auth, helo="localhost")
    evaluated = len(evaluations)
    second = await at_mail(auth, helo="localhost")
    assert first == second and second.helo.result == "none"
    assert len(evaluations) == evaluated
    assert (await at_mail(auth, helo="[192.0.2.10]")).helo.result == "none"


async def test_the_bound_holds(zone, cache):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache, spf_cache_entries=3)
    for i in range(6):
        await at_mail(auth, client=f"192.0.2.{i + 1}")
    assert len(auth.spf_cache) == 3


async def test_switched_off(zone, cache, evaluations):
    zone.txt("sender.example", "v=spf1 ip4:192.0.2.0/24 -all")
    auth = mail_auth(cache, spf_cache_entries=0)
    assert auth.spf_cache is None
    await at_mail(auth)
    evaluated = len(evaluations)
    assert (await at_mail(auth)).mailfrom.result == "pass"
    assert len(evaluations) > evaluated


def test_a_bound_below_one_is_refused(cache):
    with pytest.raises(ValueError, match="max_entries"):
        SpfCache(cache, max_entries=0)
