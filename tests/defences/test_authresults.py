"""Authentication-Results: our one header, and others' claims to our name."""
from __future__ import annotations

import pytest

from correo_server.mailauth import authresults, headers
from correo_server.mailauth.dkimverify import DkimResult
from correo_server.mailauth.spf import SpfResult


@pytest.mark.parametrize("value,authserv_id", [
    ("mx.example.com; spf=pass", "mx.example.com"),
    ("MX.Example.COM; none", "mx.example.com"),
    ("(forged) mx.example.com (really) 1; dkim=pass", "mx.example.com"),
    ('"mx.example.com"; none', "mx.example.com"),
    ("mx.example.com.; spf=pass", "mx.example.com"),
    ("mx.example.com.evil.example; spf=pass", "mx.example.com.evil.example"),
])
def test_the_authserv_id_is_read_through_comments_case_and_quotes(value, authserv_id):
    assert authresults.authserv_id(value) == authserv_id


def test_only_fields_claiming_our_id_are_removed_wherever_they_are():
    msg = (b"Received: from a\r\n"
           b"Authentication-Results: (x) Mx.Example.Com;\r\n spf=pass smtp.mailfrom=forged.example\r\n"
           b"Subject: hi\r\n"
           b"Authentication-Results: mx.example.com.evil.example; spf=pass\r\n"
           b"authentication-results: mx.example.com; dkim=pass\r\n"
           b"\r\nAuthentication-Results: mx.example.com; in the body stays\r\n")
    out, removed = authresults.strip_claims(msg, ["mx.example.com"])
    assert removed == 2
    assert headers.values(out, "Authentication-Results") == ["mx.example.com.evil.example; spf=pass"]
    assert out.endswith(b"\r\nAuthentication-Results: mx.example.com; in the body stays\r\n")


def test_the_header_is_folded_and_values_are_quoted_when_needed():
    header = authresults.header("mx.example.com", spf=[SpfResult("mailfrom", "a@x.example", "x.example", "pass")],
                                dkim=[DkimResult("fail", "x.example", "s1", "rsa-sha256", "ab/cd+ef",
                                                 reason="signature did not verify")])
    text = header.decode()
    assert all(len(line) <= 100 for line in text.split("\r\n"))
    assert text.endswith("\r\n") and "\r\n\t" in text
    assert 'header.b="ab/cd+ef"' in text and 'reason="signature did not verify"' in text


def test_nothing_checked_says_none():
    assert authresults.header("mx.example.com") == b"Authentication-Results: mx.example.com; none\r\n"
