"""The DNS records a domain owner must publish, as `correo status --dns`
prints them: zone-file lines that a real zone parser (dnspython's, the one
behind many DNS tools) reads back into exactly the records of
``status.dnsRecords``, a section per zone, long TXT values split as DNS
requires; and the same from a MailDomain as `kubectl get -o json` shows it."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from daytwo_support import maildomain

from correo_operator import status as statusmod
from correo_operator import zonefile


@pytest.fixture(scope="module")
def dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sections(text: str) -> dict[str, str]:
    """zone name -> its lines, split at the ``; zone NAME`` comments."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("; zone "):
            current = line.removeprefix("; zone ").rstrip(".")
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {zone: "\n".join(lines) + "\n" for zone, lines in out.items()}


def parsed(text: str) -> dict[str, dns.zone.Zone]:
    return {zone: dns.zone.from_text(body, origin=zone + ".", relativize=False, check_origin=False)
            for zone, body in sections(text).items()}


def wire_value(rdata) -> str:
    """A record's value as status.dnsRecords writes it (TXT strings joined, as receivers join them)."""
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode()
    return rdata.to_text()


def assert_zone_holds_exactly(zones: dict[str, dns.zone.Zone], records: list[dict]) -> None:
    got = sorted((str(name), dns.rdatatype.to_text(rds.rdtype), wire_value(rd))
                 for zone in zones.values() for name, rds in zone.iterate_rdatasets() for rd in rds)
    want = sorted((r["name"], r["type"], r["value"]) for r in records)
    assert got == want


def records_of(dkim_key, **spec):
    domain = maildomain(**{"hostname": "mail.example.com", "tls": {"secretName": "mail-tls"}, **spec})
    return statusmod.dns_records(domain, dkim_key)


def test_a_real_zone_parser_reads_back_every_record(dkim_key):
    records = records_of(dkim_key, aliasDomains=["example.net"])
    text = zonefile.render(records, ["example.com", "example.net"])
    zones = parsed(text)
    assert set(zones) == {"example.com", "example.net"}
    assert_zone_holds_exactly(zones, records)
    # What a receiver looks up, per zone, among others:
    com, net = zones["example.com"], zones["example.net"]
    assert com.find_rdataset("example.com.", "MX")[0].exchange.to_text() == "mail.example.com."
    assert com.find_rdataset("_submissions._tcp.example.com.", "SRV")[0].port == 465
    assert com.find_rdataset("_mta-sts.example.com.", "TXT")
    assert com.find_rdataset("_smtp._tls.example.com.", "TXT")
    assert net.find_rdataset("correo._domainkey.example.net.", "TXT")
    assert net.find_rdataset("_imaps._tcp.example.net.", "SRV")[0].target.to_text() == "mail.example.com."


def test_a_dkim_key_longer_than_one_dns_string_is_split_and_joins_back(dkim_key):
    records = records_of(dkim_key)
    (dkim,) = [r for r in records if r["purpose"] == "DKIM"]
    assert len(dkim["value"]) > 255
    zone = parsed(zonefile.render(records, ["example.com"]))["example.com"]
    (rdata,) = zone.find_rdataset("correo._domainkey.example.com.", "TXT")
    assert len(rdata.strings) > 1 and all(len(s) <= 255 for s in rdata.strings)
    assert b"".join(rdata.strings).decode() == f"v=DKIM1; k=rsa; p={dkim_key}"


def test_every_line_says_what_it_is_for_and_the_ttl():
    records = records_of(None)
    text = zonefile.render(records, ["example.com"], ttl=300)
    comments = [line for line in text.splitlines() if line.startswith(";")]
    for purpose in ("MX", "SPF", "DMARC", "SRV", "MTA-STS", "TLS-RPT", "Autoconfig", "Autodiscover"):
        assert f"; {purpose}" in comments
    rrs = [line for line in text.splitlines() if line and not line.startswith(";")]
    assert rrs and all(line.split("\t")[1:3] == ["300", "IN"] for line in rrs)


@pytest.mark.parametrize("value, expected", [
    ('say "hi"', r'"say \"hi\""'),
    ("back\\slash", r'"back\\slash"'),
    ("", '""'),
    ("é", r'"\195\169"'),
])
def test_txt_values_are_quoted_as_master_files_require(value, expected):
    assert zonefile.quote_txt(value) == expected
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, expected)
    assert b"".join(rdata.strings) == value.encode()


def test_records_outside_the_named_zones_get_their_own_section():
    text = zonefile.render([{"purpose": "X", "type": "A", "name": "elsewhere.org.", "value": "192.0.2.1"}],
                           ["example.com"])
    assert set(sections(text)) == {"elsewhere.org"}


def run_cli(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "correo_operator.cli", "status", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_from_kubectl_output_prints_the_zone_of_every_maildomain(dkim_key):
    records = records_of(dkim_key, aliasDomains=["example.net"])
    obj = {"apiVersion": "correo.dev/v1alpha1", "kind": "MailDomain",
           "metadata": {"name": "example-com", "namespace": "mail"},
           "spec": {"domain": "example.com", "aliasDomains": ["example.net"]},
           "status": {"dnsRecords": records}}
    waiting = {**obj, "metadata": {"name": "new", "namespace": "mail"}, "spec": {"domain": "new.example"},
               "status": {}}
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": [obj, waiting]})
    done = run_cli("--dns", "--from", "-", stdin=listing)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("; MailDomain mail/example-com: the DNS records to publish\n")
    assert_zone_holds_exactly(parsed(done.stdout), records)


def test_from_without_records_or_without_dns_says_what_is_wrong():
    nothing = json.dumps({"kind": "MailDomain", "metadata": {"name": "x"}, "spec": {"domain": "x.example"}})
    done = run_cli("--dns", "--from", "-", stdin=nothing)
    assert done.returncode == 1 and "no MailDomain with status.dnsRecords" in done.stderr
    done = run_cli("--from", "-", stdin=nothing)
    assert done.returncode == 2 and "--from goes with --dns" in done.stderr
