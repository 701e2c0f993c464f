"""DKIM verification of every signature, with keys from the loopback DNS."""
from __future__ import annotations

import base64
import shutil
import subprocess
import time

import dkim

import pytest
from defences_support import DkimKey, ed25519_key, message, rsa_key

from correo_server.mailauth import authresults, dkimverify
from correo_server.mailauth.dnsanswers import DnsView


@pytest.fixture(scope="module")
def rsa():
    return rsa_key()


@pytest.fixture(scope="module")
def ed():
    return ed25519_key()


async def verify(resolver, msg):
    return await dkimverify.check(DnsView(resolver), msg)


async def test_rsa_sha256_signature_passes(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa.record)
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert (result.result, result.domain, result.selector, result.algorithm) == \
        ("pass", "sender.example", "s1", "rsa-sha256")
    clause = authresults.dkim_clause(result)
    assert clause.startswith("dkim=pass") and "header.d=sender.example" in clause and "header.s=s1" in clause
    assert "header.b=" in clause


async def test_ed25519_sha256_signature_passes(zone, resolver, ed):
    zone.txt("ed._domainkey.sender.example", ed.record)
    [result] = await verify(resolver, ed.sign(message(), "sender.example", "ed"))
    assert (result.result, result.algorithm) == ("pass", "ed25519-sha256")


async def test_every_signature_gets_a_result(zone, resolver, rsa, ed):
    """A message signed by the author's domain (ed25519 and RSA) and by a
    mailing list service: three results, whatever their order."""
    zone.txt("ed._domainkey.sender.example", ed.record)
    zone.txt("s1._domainkey.sender.example", rsa.record)
    other = rsa_key()
    zone.txt("list._domainkey.lists.example", other.record)
    signed = other.sign(rsa.sign(ed.sign(message(), "sender.example", "ed"), "sender.example", "s1"),
                        "lists.example", "list")
    results = await verify(resolver, signed)
    assert [(r.domain, r.selector, r.result) for r in results] == [
        ("lists.example", "list", "pass"), ("sender.example", "s1", "pass"), ("sender.example", "ed", "pass")]
    assert len({r.header_b for r in results}) == 3


async def test_a_changed_body_fails(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa.record)
    signed = rsa.sign(message(body="Pay 10 EUR.\r\n"), "sender.example", "s1")
    [result] = await verify(resolver, signed.replace(b"Pay 10 EUR.", b"Pay 99 EUR."))
    assert result.result == "fail"
    assert "body hash" in result.reason
    assert 'reason="body hash did not verify"' in authresults.dkim_clause(result)


async def test_a_changed_signed_header_fails(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa.record)
    signed = rsa.sign(message(subject="Invoice"), "sender.example", "s1")
    [result] = await verify(resolver, signed.replace(b"Subject: Invoice", b"Subject: Invoice paid"))
    assert result.result == "fail"


async def test_a_signature_made_with_another_key_fails(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa_key().record)
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert result.result == "fail"


async def test_no_key_published_is_permerror(zone, resolver, rsa):
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert result.result == "permerror"
    assert "no key" in result.reason


async def test_a_revoked_key_fails(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", "v=DKIM1; k=rsa; p=")
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert result.result == "fail"
    assert "revoked" in result.reason


async def test_a_key_record_that_is_not_a_key_is_permerror(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", "v=DKIM1; k=rsa; p=bm90IGEga2V5")
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert result.result == "permerror"


async def test_dns_failure_for_the_key_is_temperror(zone, resolver, rsa):
    zone.fail("s1._domainkey.sender.example")
    [result] = await verify(resolver, rsa.sign(message(), "sender.example", "s1"))
    assert result.result == "temperror"
    assert authresults.dkim_clause(result).startswith("dkim=temperror")


async def test_a_signature_with_a_syntax_error_is_neutral(zone, resolver):
    msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example\r\n" + message()
    [result] = await verify(resolver, msg)
    assert result.result == "neutral"
    assert "syntax" in result.reason


async def test_an_expired_signature_fails(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa.record)
    view = DnsView(resolver)
    await view.lookup("s1._domainkey.sender.example", "TXT")
    signature = dkim.sign(message(), b"s1", b"sender.example", rsa.private, linesep=b"\r\n")
    expired = signature.replace(b"v=1;", b"v=1; x=1000000000;", 1)  # x= in 2001
    [result] = dkimverify.verify(expired + message(), view.answers, now=time.time())
    assert result.result == "fail" and "expired" in result.reason
    [fresh] = dkimverify.verify(signature + message(), view.answers, now=time.time())
    assert fresh.result == "pass"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a 512-bit RSA key")
async def test_a_key_shorter_than_1024_bits_is_policy(zone, resolver, tmp_path):
    pem = subprocess.run(["openssl", "genrsa", "512"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True,
                         check=True).stdout
    small = DkimKey("rsa-sha256", pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())
    zone.txt("small._domainkey.sender.example", small.record)
    [result] = await verify(resolver, small.sign(message(), "sender.example", "small"))
    assert result.result == "policy"


async def test_an_unsigned_message_has_no_results_and_says_dkim_none(resolver):
    assert await verify(resolver, message()) == []
    assert "dkim=none" in authresults.header("mx.example.com", dkim=[]).decode()


async def test_two_signatures_with_one_key_ask_dns_once(zone, resolver, rsa):
    zone.txt("s1._domainkey.sender.example", rsa.record)
    signed = rsa.sign(rsa.sign(message(), "sender.example", "s1"), "sender.example", "s1")
    results = await verify(resolver, signed)
    assert [r.result for r in results] == ["pass", "pass"]
    assert zone.asked("s1._domainkey.sender.example", "TXT") == 1
