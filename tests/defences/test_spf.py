"""SPF for MAIL FROM and HELO over the loopback DNS: each RFC 7208 result,
the reply it implies at MAIL FROM, and its Authentication-Results clause."""
from __future__ import annotations

import pytest

from correo_server.mailauth import authresults, spf
from correo_server.mailauth.dnsanswers import DnsView

CLIENT = "192.0.2.10"


async def check(resolver, sender, helo="mail.sender.example", ip=CLIENT, view=None):
    return await spf.check(view or DnsView(resolver), ip, sender, helo, receiver="mx.example.com")


@pytest.mark.parametrize("record,result,code,status", [
    ("v=spf1 ip4:192.0.2.0/24 -all", "pass", None, None),
    ("v=spf1 ip4:198.51.100.0/24 -all", "fail", 550, "5.7.23"),
    ("v=spf1 ip4:198.51.100.0/24 ~all", "softfail", None, None),
    ("v=spf1 ip4:198.51.100.0/24 ?all", "neutral", None, None),
    ("v=spf1 ip4:192.0.2.0/24 frobnicate -all", "permerror", None, None),
])
async def test_each_record_gives_its_result_and_reply(zone, resolver, record, result, code, status):
    zone.txt("sender.example", record)
    verdict = await check(resolver, "alice@sender.example")
    assert verdict.result == result
    assert verdict.domain == "sender.example"
    reply = spf.reply_for(verdict)
    if code is None:
        assert reply is None
    else:
        assert (reply.code, reply.status) == (code, status)
        assert "sender.example" in reply.text and reply.reason == "spf_fail"
    assert authresults.spf_clause(verdict).startswith(f"spf={result}")
    assert "smtp.mailfrom=sender.example" in authresults.spf_clause(verdict)


async def test_no_record_is_none_and_goes_on(zone, resolver):
    zone.exists("sender.example")
    zone.txt("sender.example", "some-site-verification=abc")
    verdict = await check(resolver, "alice@sender.example")
    assert verdict.result == "none"
    assert spf.reply_for(verdict) is None


async def test_a_domain_that_does_not_exist_is_none(zone, resolver):
    verdict = await check(resolver, "alice@nowhere.example")
    assert verdict.result == "none"


async def test_dns_server_failure_is_temperror_and_defers(zone, resolver):
    zone.fail("sender.example")
    verdict = await check(resolver, "alice@sender.example")
    assert verdict.result == "temperror"
    reply = spf.reply_for(verdict)
    assert (reply.code, reply.status) == (451, "4.7.24")
    assert "try again later" in reply.text


async def test_dns_timeout_is_temperror_not_a_pass(zone, resolver):
    zone.hang("sender.example")
    verdict = await check(resolver, "alice@sender.example")
    assert verdict.result == "temperror"
    assert spf.reply_for(verdict).code == 451


async def test_a_failure_deep_in_an_include_is_temperror(zone, resolver):
    zone.txt("sender.example", "v=spf1 include:_spf.provider.example -all")
    zone.fail("_spf.provider.example")
    assert (await check(resolver, "alice@sender.example")).result == "temperror"


async def test_include_a_and_mx_are_followed_through_dns(zone, resolver):
    zone.txt("sender.example", "v=spf1 include:_spf.provider.example mx -all")
    zone.txt("_spf.provider.example", "v=spf1 a:out.provider.example -all")
    zone.a("out.provider.example", "198.51.100.7")
    zone.mx("sender.example", (10, "mx1.sender.example"))
    zone.a("mx1.sender.example", "192.0.2.10")
    assert (await check(resolver, "a@sender.example", ip="198.51.100.7")).result == "pass"
    assert (await check(resolver, "a@sender.example", ip="192.0.2.10")).result == "pass"
    assert (await check(resolver, "a@sender.example", ip="203.0.113.1")).result == "fail"


async def test_more_than_ten_dns_mechanisms_is_permerror(zone, resolver):
    """RFC 7208 section 4.6.4: at most 10 terms that ask DNS."""
    zone.txt("sender.example", "v=spf1 " + " ".join(f"include:i{n}.sender.example" for n in range(12)) + " -all")
    for n in range(12):
        zone.txt(f"i{n}.sender.example", "v=spf1 ip4:203.0.113.0/24 ?all")
    verdict = await check(resolver, "a@sender.example")
    assert verdict.result == "permerror"
    assert "lookup" in verdict.explanation.lower()


async def test_more_than_two_void_lookups_is_permerror(zone, resolver):
    zone.txt("sender.example", "v=spf1 a:v1.sender.example a:v2.sender.example a:v3.sender.example -all")
    verdict = await check(resolver, "a@sender.example")
    assert verdict.result == "permerror"
    assert "void" in verdict.explanation.lower()


async def test_two_spf_records_are_permerror(zone, resolver):
    zone.txt("sender.example", "v=spf1 -all", "v=spf1 +all")
    assert (await check(resolver, "a@sender.example")).result == "permerror"


async def test_null_sender_checks_the_helo_identity(zone, resolver):
    zone.txt("mail.sender.example", "v=spf1 ip4:192.0.2.10 -all")
    verdict = await check(resolver, "", helo="mail.sender.example")
    assert (verdict.identity, verdict.result, verdict.domain) == ("helo", "pass", "mail.sender.example")
    assert "smtp.helo=mail.sender.example" in authresults.spf_clause(verdict)


async def test_helo_address_literal_is_none(zone, resolver):
    verdict = await check(resolver, "", helo="[192.0.2.10]")
    assert (verdict.identity, verdict.result) == ("helo", "none")


async def test_ipv6_client(zone, resolver):
    zone.txt("sender.example", "v=spf1 ip6:2001:db8::/32 -all")
    assert (await check(resolver, "a@sender.example", ip="2001:db8::25")).result == "pass"
    assert (await check(resolver, "a@sender.example", ip="2001:db9::25")).result == "fail"


async def test_answers_are_kept_for_the_connection(zone, resolver):
    zone.txt("sender.example", "v=spf1 include:_spf.provider.example -all")
    zone.txt("_spf.provider.example", "v=spf1 ip4:192.0.2.0/24 -all")
    view = DnsView(resolver)
    first = await check(resolver, "a@sender.example", view=view)
    asked = len(zone.queries)
    second = await check(resolver, "b@sender.example", view=view)
    assert first.result == second.result == "pass"
    assert len(zone.queries) == asked, "the second transaction of a connection asks DNS nothing"


async def test_fail_can_be_left_to_dmarc(zone, resolver):
    zone.txt("sender.example", "v=spf1 -all")
    verdict = await check(resolver, "a@sender.example")
    assert spf.reply_for(verdict, reject_fail=False) is None
