"""DMARC: policy discovery over the loopback DNS, the organizational domain
from the Public Suffix List, alignment, p/sp/pct, and what each result
implies."""
from __future__ import annotations

import pytest

from correo_server.mailauth import authresults, dmarc
from correo_server.mailauth.dkimverify import DkimResult
from correo_server.mailauth.dnsanswers import DnsView
from correo_server.mailauth.spf import SpfResult


def spf_pass(domain):
    return SpfResult("mailfrom", f"bounce@{domain}", domain, "pass")


def spf_fail(domain):
    return SpfResult("mailfrom", f"bounce@{domain}", domain, "fail")


def dkim_pass(domain):
    return [DkimResult("pass", domain, "s1", "rsa-sha256", "abcdefgh")]


async def run(resolver, author, spf=None, dkim=(), sample=0.0):
    return await dmarc.check(DnsView(resolver), author, spf, list(dkim), rng=lambda: sample)


@pytest.mark.parametrize("domain,org", [
    ("example.com", "example.com"),
    ("mail.example.com", "example.com"),
    ("a.b.example.co.uk", "example.co.uk"),
    ("user.github.io", "user.github.io"),  # the private section of the list counts
    ("co.uk", "co.uk"),
    ("sender.test", "sender.test"),
])
def test_organizational_domain_comes_from_the_public_suffix_list(domain, org):
    assert dmarc.organizational_domain(domain) == org


def test_relaxed_and_strict_alignment():
    assert dmarc.aligned("bounces.example.com", "example.com", "r")
    assert not dmarc.aligned("bounces.example.com", "example.com", "s")
    assert dmarc.aligned("example.com", "EXAMPLE.com.", "s")
    assert not dmarc.aligned("example.net", "example.com", "r")
    assert not dmarc.aligned("a.example.co.uk", "b.other.co.uk", "r")


@pytest.mark.parametrize("text,problem", [
    ("v=DMARC1; p=maybe", "p="),
    ("v=DMARC1; p=reject; pct=150", "pct"),
    ("v=DMARC1; p=reject; sp=bounce", "sp"),
    ("v=DMARC1; p=reject; adkim=x", "adkim"),
    ("p=reject", "v=DMARC1"),
])
def test_broken_records_say_what_is_wrong(text, problem):
    result = dmarc.parse_record(text)
    assert isinstance(result, str) and problem in result


def test_invalid_p_with_rua_is_p_none():
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:d@example.com").p == "none"


async def test_aligned_spf_passes(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    result = await run(resolver, "sender.example", spf=spf_pass("bounces.sender.example"))
    assert result.result == "pass"
    assert dmarc.reply_for(result) is None and not dmarc.junk(result)
    assert authresults.dmarc_clause(result) == "dmarc=pass (p=REJECT) header.from=sender.example"


async def test_strict_spf_alignment_needs_the_same_name(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject; aspf=s")
    result = await run(resolver, "sender.example", spf=spf_pass("bounces.sender.example"))
    assert (result.result, result.disposition) == ("fail", "reject")


async def test_aligned_dkim_passes_even_when_spf_fails(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    result = await run(resolver, "sender.example", spf=spf_fail("forwarder.example"),
                       dkim=dkim_pass("sender.example"))
    assert result.result == "pass"


async def test_unaligned_passes_fail_and_p_reject_refuses(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    result = await run(resolver, "sender.example", spf=spf_pass("other.example"), dkim=dkim_pass("other.example"))
    assert (result.result, result.policy, result.disposition) == ("fail", "reject", "reject")
    reply = dmarc.reply_for(result)
    assert (reply.code, reply.status, reply.reason) == (550, "5.7.1", "dmarc_reject")
    assert "sender.example" in reply.text
    assert authresults.dmarc_clause(result) == "dmarc=fail (p=REJECT dis=REJECT) header.from=sender.example"


async def test_p_quarantine_delivers_to_junk(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=quarantine")
    result = await run(resolver, "sender.example")
    assert (result.result, result.disposition) == ("fail", "quarantine")
    assert dmarc.reply_for(result) is None and dmarc.junk(result)


async def test_p_none_only_reports(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=none; rua=mailto:dmarc@sender.example")
    result = await run(resolver, "sender.example")
    assert (result.result, result.disposition) == ("fail", "none")
    assert dmarc.reply_for(result) is None and not dmarc.junk(result)


@pytest.mark.parametrize("sample,disposition", [(0.0, "reject"), (0.29, "reject"), (0.3, "quarantine"),
                                                (0.99, "quarantine")])
async def test_pct_samples_which_failures_get_the_policy(zone, resolver, sample, disposition):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject; pct=30")
    result = await run(resolver, "sender.example", sample=sample)
    assert result.disposition == disposition


async def test_pct_zero_quarantine_is_none(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=quarantine; pct=0")
    assert (await run(resolver, "sender.example", sample=0.0)).disposition == "none"


async def test_sp_applies_to_subdomains_found_at_the_organizational_domain(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject; sp=quarantine")
    sub = await run(resolver, "news.sender.example")
    assert (sub.policy, sub.disposition, sub.record_domain) == ("quarantine", "quarantine", "sender.example")
    top = await run(resolver, "sender.example")
    assert top.disposition == "reject"
    assert "sp=QUARANTINE" in authresults.dmarc_clause(sub)


async def test_without_sp_subdomains_get_p(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    assert (await run(resolver, "news.sender.example")).disposition == "reject"


async def test_a_subdomain_record_wins_over_the_organizational_one(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    zone.txt("_dmarc.news.sender.example", "v=DMARC1; p=none")
    assert (await run(resolver, "news.sender.example")).disposition == "none"


async def test_organizational_lookup_uses_the_public_suffix_list(zone, resolver):
    zone.txt("_dmarc.sender.co.uk", "v=DMARC1; p=reject")
    result = await run(resolver, "a.b.sender.co.uk")
    assert result.record_domain == "sender.co.uk"
    assert zone.asked("_dmarc.b.sender.co.uk") == 0


async def test_no_record_is_none(zone, resolver):
    result = await run(resolver, "sender.example")
    assert result.result == "none"
    assert dmarc.reply_for(result) is None
    assert authresults.dmarc_clause(result) == "dmarc=none header.from=sender.example"


async def test_two_records_are_no_policy(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    assert (await run(resolver, "sender.example")).result == "none"


async def test_a_broken_record_is_permerror_and_refuses_nothing(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=maybe")
    result = await run(resolver, "sender.example")
    assert result.result == "permerror"
    assert dmarc.reply_for(result) is None


async def test_dns_failure_of_the_policy_lookup_is_temperror_and_defers(zone, resolver):
    zone.fail("_dmarc.sender.example")
    result = await run(resolver, "sender.example")
    assert result.result == "temperror"
    reply = dmarc.reply_for(result)
    assert (reply.code, reply.status) == (451, "4.7.5")


async def test_an_aligned_dkim_temperror_is_not_a_fail(zone, resolver):
    """The signature that might have passed could not be checked: defer
    rather than reject on a guess."""
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    dkim = [DkimResult("temperror", "sender.example", "s1", "rsa-sha256", "abcdefgh", reason="DNS timeout")]
    result = await run(resolver, "sender.example", dkim=dkim)
    assert result.result == "temperror"
    assert dmarc.reply_for(result).code == 451


async def test_an_aligned_temperror_under_p_none_delivers(zone, resolver):
    zone.txt("_dmarc.sender.example", "v=DMARC1; p=none")
    dkim = [DkimResult("temperror", "sender.example", "s1", "rsa-sha256", "abcdefgh")]
    result = await run(resolver, "sender.example", dkim=dkim)
    assert result.result == "temperror"
    assert dmarc.reply_for(result) is None


def test_of_several_author_domains_the_strictest_decides():
    rec = dmarc.Record("reject")
    passed = dmarc.DmarcResult("pass", "a.example", "reject", "none", "a.example", rec)
    quarantine = dmarc.DmarcResult("fail", "b.example", "quarantine", "quarantine", "b.example", rec)
    reject = dmarc.DmarcResult("fail", "c.example", "reject", "reject", "c.example", rec)
    assert dmarc.worst([passed, quarantine]) is quarantine
    assert dmarc.worst([quarantine, reject, passed]) is reject
