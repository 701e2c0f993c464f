"""The defences as the relay calls them on one port-25 connection: connect,
MAIL, RCPT, end of DATA, with the loopback DNS and the real rspamd."""
from __future__ import annotations

import pytest
from defences_support import GTUBE, GTUBE_ADD_HEADER, message

from correo_server.defences import DefenceSettings, Defences
from correo_server.mailauth import headers
from correo_server.scanning.dnsbl import DnsblSettings, DnsblZone, query_name
from correo_server.scanning.rspamd import Envelope, RspamdSettings
from correo_server.srs import Srs

CLIENT = "192.0.2.10"


@pytest.fixture
def world(zone):
    zone.txt("good.example", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.txt("_dmarc.good.example", "v=DMARC1; p=reject")
    zone.txt("soft.example", "v=spf1 ~all")
    zone.txt("_dmarc.soft.example", "v=DMARC1; p=quarantine")
    return zone


def build(resolver, *, rspamd=None, zones=(), srs=None):
    settings = DefenceSettings(dnsbl=DnsblSettings(tuple(zones)),
                               rspamd=RspamdSettings(rspamd.url) if rspamd else None)
    return Defences(resolver, "mx.example.com", lambda d: d.lower() == "example.com", settings, srs=srs,
                    rng=lambda: 0.0)


async def session(defences, sender, msg, rcpt="bob@example.com"):
    conn = defences.connection(CLIENT)
    conn.connected()
    try:
        refused = await conn.at_mail("mail.good.example", sender)
        if refused:
            return "mail", refused
        outcome = await conn.at_rcpt(rcpt)
        if outcome.reply:
            return "rcpt", outcome.reply
        return "data", await conn.at_data(msg, Envelope(sender, [outcome.recipient], ip=CLIENT))
    finally:
        conn.close()


async def test_clean_authenticated_mail_gets_both_headers_on_top(world, resolver, rspamd):
    defences = build(resolver, rspamd=rspamd)
    try:
        stage, out = await session(defences, "alice@good.example", message("alice@good.example"))
    finally:
        await defences.close()
    assert stage == "data" and out.reply is None and not out.junk
    fields, _ = headers.split(out.message)
    assert fields[0].name == "Authentication-Results"
    assert "dmarc=pass" in fields[0].value
    assert headers.values(out.message, "X-Spam-Flag") == ["NO"]


async def test_gtube_is_refused_after_authentication_passed(world, resolver, rspamd):
    defences = build(resolver, rspamd=rspamd)
    try:
        stage, out = await session(defences, "alice@good.example", message("alice@good.example", body=f"{GTUBE}\r\n"))
    finally:
        await defences.close()
    assert (out.reply.code, out.reply.status) == (550, "5.7.1")
    assert out.reasons == ("spam",)


async def test_spam_for_junk_is_flagged(world, resolver, rspamd):
    defences = build(resolver, rspamd=rspamd)
    try:
        _, out = await session(defences, "alice@good.example", message("alice@good.example", body=f"{GTUBE_ADD_HEADER}\r\n"))
    finally:
        await defences.close()
    assert out.reply is None and out.junk and out.reasons == ("spam_junk",)
    assert headers.values(out.message, "X-Spam-Flag") == ["YES"]


async def test_dmarc_quarantine_is_flagged_even_when_rspamd_finds_it_clean(world, resolver, rspamd):
    defences = build(resolver, rspamd=rspamd)
    try:
        _, out = await session(defences, "alice@soft.example", message("alice@soft.example"))
    finally:
        await defences.close()
    assert out.junk and "dmarc_quarantine" in out.reasons
    assert headers.values(out.message, "X-Spam-Flag") == ["YES"]
    assert headers.values(out.message, "X-Spam-Action") == ["no action"]


async def test_without_rspamd_a_forged_spam_flag_is_removed(world, resolver):
    defences = build(resolver)
    _, out = await session(defences, "alice@good.example",
                           message("alice@good.example", extra="X-Spam-Flag: YES\r\nX-Spam-Status: Yes\r\n"))
    assert out.reply is None
    assert headers.values(out.message, "X-Spam-Flag") == [] and headers.values(out.message, "X-Spam-Status") == []


async def test_an_own_domain_forgery_never_reaches_rspamd(world, resolver, rspamd):
    defences = build(resolver, rspamd=rspamd)
    try:
        _, out = await session(defences, "alice@good.example", message("ceo@example.com"))
    finally:
        await defences.close()
    assert out.reply.reason == "own_domain" and out.scan is None


async def test_a_blocklisted_client_is_refused_at_rcpt(world, resolver):
    world.a(query_name(CLIENT, "bl.example"), "127.0.0.2")
    world.txt(query_name(CLIENT, "bl.example"), "Listed for spam")
    stage, reply = await session(build(resolver, zones=[DnsblZone("bl.example")]), "alice@good.example", b"")
    assert stage == "rcpt"
    assert str(reply) == ("554 5.7.1 Service unavailable; client host [192.0.2.10] blocked using bl.example; "
                          "Listed for spam")


async def test_spf_fail_is_refused_at_mail(world, resolver):
    world.txt("strict.example", "v=spf1 -all")
    stage, reply = await session(build(resolver), "alice@strict.example", b"")
    assert (stage, reply.code, reply.status) == ("mail", 550, "5.7.23")


async def test_a_bounce_to_an_srs_address_goes_back_to_the_original_sender(world, resolver):
    srs = Srs([b"secret"], "example.com")
    bounce_to = srs.forward("carol@remote.example")
    conn = build(resolver, srs=srs).connection(CLIENT)
    outcome = await conn.at_rcpt(bounce_to)
    assert (outcome.reply, outcome.recipient, outcome.srs) == (None, "carol@remote.example", True)
    forged = await conn.at_rcpt("SRS0=AAAA=ZZ=victim.example=dave@example.com")
    assert (forged.reply.code, forged.reply.status) == (550, "5.1.1")
