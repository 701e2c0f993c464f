"""Sender authentication as the relay runs it for one port-25 connection:
SPF at MAIL FROM, then DKIM, DMARC and the own-domain rule at the end of
DATA, over a loopback DNS serving several sender domains; each verdict
reaches its SMTP reply and one Authentication-Results header."""
from __future__ import annotations

import pytest
from defences_support import message, rsa_key

from correo_server.mailauth import headers
from correo_server.mailauth.session import AuthPolicy, MailAuth

CLIENT = "192.0.2.10"
HOSTED = {"example.com", "example.net"}  # example.net: an alias domain


@pytest.fixture(scope="module")
def key():
    return rsa_key()


@pytest.fixture
def world(zone, key):
    """Sender domains with every kind of record."""
    zone.txt("good.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt("_dmarc.good.example", "v=DMARC1; p=reject")
    zone.txt("s1._domainkey.good.example", key.record)
    zone.txt("strict.example", "v=spf1 -all")
    zone.txt("_dmarc.strict.example", "v=DMARC1; p=reject")
    zone.txt("s1._domainkey.strict.example", key.record)
    zone.txt("soft.example", "v=spf1 ~all")
    zone.txt("_dmarc.soft.example", "v=DMARC1; p=quarantine")
    zone.txt("neutral.example", "v=spf1 ?all")
    zone.exists("none.example")
    zone.txt("broken.example", "v=spf1 ip4:192.0.2.0/24 nonsense -all")
    zone.txt("_dmarc.broken.example", "v=DMARC1; p=reject")
    zone.fail("flaky.example")
    return zone


def auth(resolver, **policy):
    return MailAuth(resolver, "mx.example.com", lambda d: d.lower() in HOSTED, policy=AuthPolicy(**policy),
                    rng=lambda: 0.0)


async def transaction(resolver, sender, msg, helo="mail.sender.example", **policy):
    conn = auth(resolver, **policy).connection(CLIENT)
    mail = await conn.at_mail(helo, sender)
    if mail.reply is not None:
        return mail, None
    return mail, await conn.at_data(mail, msg)


def ar(data) -> str:
    return data.header.decode()


@pytest.mark.parametrize("sender_domain,spf,code,status", [
    ("good.example", "pass", None, None),
    ("strict.example", "fail", 550, "5.7.23"),
    ("soft.example", "softfail", None, None),
    ("neutral.example", "neutral", None, None),
    ("none.example", "none", None, None),
    ("flaky.example", "temperror", 451, "4.7.24"),
    ("broken.example", "permerror", None, None),
])
async def test_each_spf_verdict_at_mail_from(world, resolver, sender_domain, spf, code, status):
    mail, data = await transaction(resolver, f"alice@{sender_domain}", message(f"alice@{sender_domain}"))
    assert mail.mailfrom.result == spf
    if code is None:
        assert mail.reply is None
        assert f"spf={spf}" in ar(data) and f"smtp.mailfrom={sender_domain}" in ar(data)
    else:
        assert (mail.reply.code, mail.reply.status) == (code, status)


async def test_pass_everywhere_gives_one_header_with_all_three(world, resolver, key):
    signed = key.sign(message("alice@good.example"), "good.example", "s1")
    mail, data = await transaction(resolver, "alice@good.example", signed)
    assert data.reply is None and not data.junk
    text = ar(data)
    assert text.startswith("Authentication-Results: mx.example.com;")
    assert "spf=pass smtp.mailfrom=good.example" in text
    assert "dkim=pass" in text and "header.d=good.example" in text
    assert "dmarc=pass (p=REJECT) header.from=good.example" in text
    assert text.count("Authentication-Results:") == 1


async def test_dkim_rescues_an_spf_fail_when_fail_is_left_to_dmarc(world, resolver, key):
    """Forwarded mail: SPF fails for the forwarder's address but the author's
    signature survives; with rejectSpfFail off, DMARC passes on DKIM."""
    signed = key.sign(message("alice@strict.example"), "strict.example", "s1")
    mail, data = await transaction(resolver, "alice@strict.example", signed, reject_spf_fail=False)
    assert mail.reply is None
    assert data.reply is None
    assert "spf=fail" in ar(data) and "dmarc=pass" in ar(data)


async def test_dmarc_reject_refuses_at_end_of_data(world, resolver):
    """The From: claims good.example (p=reject); the envelope is another
    domain whose SPF passes: nothing aligned."""
    zone = world
    zone.txt("bulk.example", "v=spf1 ip4:192.0.2.0/24 -all")
    mail, data = await transaction(resolver, "bounce@bulk.example", message("ceo@good.example"))
    assert mail.reply is None
    assert (data.reply.code, data.reply.status, data.reply.reason) == (550, "5.7.1", "dmarc_reject")
    assert "dmarc=fail (p=REJECT dis=REJECT) header.from=good.example" in ar(data)


async def test_dmarc_quarantine_goes_to_junk(world, resolver):
    mail, data = await transaction(resolver, "alice@soft.example", message("alice@soft.example"))
    assert data.reply is None and data.junk
    assert "dmarc=fail (p=QUARANTINE dis=QUARANTINE)" in ar(data)


async def test_a_tampered_signature_is_reported_as_dkim_fail(world, resolver, key):
    signed = key.sign(message("alice@good.example", body="Original.\r\n"), "good.example", "s1")
    mail, data = await transaction(resolver, "alice@good.example", signed.replace(b"Original.", b"Changed!!"))
    assert data.reply is None  # SPF is aligned: DMARC still passes
    assert "dkim=fail" in ar(data) and "dmarc=pass" in ar(data)


async def test_dkim_key_dns_failure_under_p_reject_defers(world, resolver, key):
    world.txt("soft2.example", "v=spf1 ~all")
    world.txt("_dmarc.soft2.example", "v=DMARC1; p=reject")
    world.fail("s1._domainkey.soft2.example")
    signed = key.sign(message("alice@soft2.example"), "soft2.example", "s1")
    mail, data = await transaction(resolver, "alice@soft2.example", signed)
    assert (data.reply.code, data.reply.status) == (451, "4.7.5")
    assert "dkim=temperror" in ar(data) and "dmarc=temperror" in ar(data)


async def test_a_forged_authentication_results_is_removed(world, resolver):
    forged = ("Authentication-Results: MX.example.com; spf=pass smtp.mailfrom=good.example;\r\n"
              " dkim=pass header.d=good.example; dmarc=pass header.from=good.example\r\n"
              "Authentication-Results: other.example; spf=pass smtp.mailfrom=none.example\r\n")
    mail, data = await transaction(resolver, "alice@none.example", message("alice@none.example", extra=forged))
    assert data.removed == 1
    remaining = headers.values(data.message, "Authentication-Results")
    assert remaining == ["other.example; spf=pass smtp.mailfrom=none.example"], "others' results are kept"
    assert "spf=none" in ar(data)


async def test_the_helo_identity_is_reported_too(world, resolver):
    world.txt("mail.good.example", "v=spf1 ip4:192.0.2.10 -all")
    mail, data = await transaction(resolver, "alice@good.example", message("alice@good.example"),
                                   helo="mail.good.example")
    assert "spf=pass smtp.helo=mail.good.example" in ar(data)


async def test_a_failing_helo_refuses(world, resolver):
    world.txt("liar.example", "v=spf1 -all")
    mail, _ = await transaction(resolver, "alice@good.example", message("alice@good.example"), helo="liar.example")
    assert (mail.reply.code, mail.reply.status) == (550, "5.7.23")
    assert "liar.example" in mail.reply.text


class TestOwnDomains:
    """Unauthenticated mail claiming a hosted domain, before any DNS is published."""

    async def test_forged_envelope_sender_is_refused(self, world, resolver):
        mail, data = await transaction(resolver, "alice@example.com", message("alice@good.example"))
        assert mail.reply is None, "SPF is none: nothing to say at MAIL yet, DKIM may still vouch"
        assert (data.reply.code, data.reply.status, data.reply.reason) == (550, "5.7.1", "own_domain")
        assert "example.com" in data.reply.text and "submission" in data.reply.text

    async def test_forged_from_header_is_refused(self, world, resolver):
        mail, data = await transaction(resolver, "alice@good.example", message("ceo@example.com"))
        assert data.reply is not None and data.reply.reason == "own_domain"
        assert "From: header" in data.reply.text

    async def test_alias_domains_are_protected_too(self, world, resolver):
        mail, data = await transaction(resolver, "alice@good.example", message("ceo@Example.NET"))
        assert data.reply is not None and data.reply.reason == "own_domain"

    async def test_spf_pass_for_our_domain_is_accepted(self, world, resolver):
        world.txt("example.com", "v=spf1 ip4:192.0.2.10 -all")
        mail, data = await transaction(resolver, "alice@example.com", message("alice@example.com"))
        assert mail.reply is None and data.reply is None

    async def test_an_aligned_dkim_signature_is_accepted(self, world, resolver, key):
        world.txt("news._domainkey.example.com", key.record)
        signed = key.sign(message("news@example.com"), "example.com", "news")
        mail, data = await transaction(resolver, "bounces@mailer.good.example", signed)
        assert data.reply is None

    async def test_a_signature_by_another_domain_is_not_enough(self, world, resolver, key):
        signed = key.sign(message("ceo@example.com"), "good.example", "s1")
        mail, data = await transaction(resolver, "alice@good.example", signed)
        assert data.reply is not None and data.reply.reason == "own_domain"

    async def test_the_rule_can_be_switched_off(self, world, resolver):
        mail, data = await transaction(resolver, "alice@example.com", message("alice@example.com"),
                                       protect_own_domains=False)
        assert data.reply is None


async def test_one_connection_asks_dns_once_for_two_transactions(world, resolver):
    conn = auth(resolver).connection(CLIENT)
    for _ in range(2):
        mail = await conn.at_mail("mail.sender.example", "alice@good.example")
        await conn.at_data(mail, message("alice@good.example"))
    assert world.asked("good.example", "TXT") == 1
    assert world.asked("_dmarc.good.example", "TXT") == 1
