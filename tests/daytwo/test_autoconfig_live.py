"""A running ``correo up`` serves the autoconfiguration documents, and what
they say works: a client that follows them (Python's imaplib, poplib and
smtplib, as Thunderbird, Outlook or Apple Mail would) logs in on every port
they name, sends and reads mail.  The MTA-STS policy is served with the id
that ``correo status`` tells the domain owner to publish."""
from __future__ import annotations

import imaplib
import plistlib
import poplib
import shutil
import smtplib
import ssl
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from email.message import EmailMessage

import pytest
import yaml
import thunderbird_reader
from daytwo_support import check_rfc8461_policy
from e2e.conftest import ROOT, start_stack

from correo_server.mtasts import policy as stspolicy

PEOPLE = {"alice@example.com": "wonderland", "bob@example.com": "canwefixit"}  # examples/quickstart
R2006A = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("autoconfig-live")
    shutil.copytree(ROOT / "examples" / "quickstart", root / "yaml")
    stack = start_stack(root / "data", [root / "yaml"])
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def status(live) -> dict:
    doc = yaml.safe_load(live.run("status", "-o", "yaml").stdout)
    return {"domain": next(o for o in doc["items"] if o["kind"] == "MailDomain"), "endpoints": doc["endpoints"]}


@pytest.fixture(scope="module")
def endpoint(status) -> str:
    return status["domain"]["status"]["endpoints"]["autoconfig"]


@pytest.fixture(scope="module")
def tls(live) -> ssl.SSLContext:
    """Trusts the stack's own certificate (made for mail.example.com; the local
    documents name 127.0.0.1, so the name is not checked)."""
    ctx = ssl.create_default_context(cafile=str(live.data / "config" / "tls" / "tls.crt"))
    ctx.check_hostname = False
    return ctx


def fetch(url: str, *, host: str | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        return rsp.status, dict(rsp.headers), rsp.read()


def log_in(protocol: str, host: str, port: int, security: str, tls: ssl.SSLContext, user: str):
    """Connect and log in as a mail client would from the document's words;
    returns the logged-in client."""
    password = PEOPLE[user]
    if protocol == "imap":
        client = imaplib.IMAP4_SSL(host, port, ssl_context=tls, timeout=15) if security == "tls" \
            else imaplib.IMAP4(host, port, timeout=15)
        if security == "starttls":
            client.starttls(tls)
        assert client.login(user, password)[0] == "OK"
    elif protocol == "pop3":
        client = poplib.POP3_SSL(host, port, context=tls, timeout=15) if security == "tls" \
            else poplib.POP3(host, port, timeout=15)
        if security == "starttls":
            client.stls(tls)
        client.user(user)
        assert client.pass_(password).startswith(b"+OK")
    else:
        client = smtplib.SMTP_SSL(host, port, context=tls, timeout=15) if security == "tls" \
            else smtplib.SMTP(host, port, timeout=15)
        if security == "starttls":
            client.starttls(context=tls)
        client.login(user, password)
    return client


def close(protocol: str, client) -> None:
    if protocol == "imap":
        client.logout()
    else:
        client.quit()


def thunderbird_lookup(endpoint: str, address: str, *, well_known: bool = False) -> thunderbird_reader.AccountConfig:
    """What Thunderbird sets up for ``address`` from one of the lookups it makes
    (``autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=`` or, without
    the address, ``<domain>/.well-known/autoconfig/mail/config-v1.1.xml``),
    read by Thunderbird's rules."""
    domain = address.rpartition("@")[2]
    if well_known:
        host, path = domain, "/.well-known/autoconfig/mail/config-v1.1.xml"
    else:
        host, path = f"autoconfig.{domain}", f"/mail/config-v1.1.xml?emailaddress={urllib.parse.quote(address)}"
    status, headers, body = fetch(urllib.parse.urljoin(endpoint, path), host=host)
    assert status == 200
    return thunderbird_reader.replace_variables(thunderbird_reader.read(body, headers["Content-Type"]), address)


def thunderbird_servers(endpoint: str, address: str) -> list[tuple[str, str, int, str, str]]:
    """(protocol, host, port, security, login) of the account and its alternatives, as Thunderbird reads them."""
    security = {"SSL": "tls", "STARTTLS": "starttls", "plain": "plain"}
    return [(s.type, s.hostname, s.port, security[s.socket_type], s.username)
            for s in thunderbird_lookup(endpoint, address).servers]


def test_both_places_thunderbird_looks_give_the_same_account(endpoint):
    by_address = thunderbird_lookup(endpoint, "alice@example.com")
    assert thunderbird_lookup(endpoint, "alice@example.com", well_known=True) == by_address
    # The quickstart's local stack has a (self-signed) certificate: implicit TLS first.
    assert (by_address.incoming.type, by_address.incoming.socket_type, by_address.incoming.username) == (
        "imap", "SSL", "alice@example.com")
    assert (by_address.outgoing.socket_type, by_address.outgoing.username) == ("SSL", "alice@example.com")


def test_the_banner_and_status_name_the_endpoint(live, status, endpoint):
    assert f"autoconfig  {endpoint}" in live.log()
    assert endpoint == f"http://127.0.0.1:{live.port('autoconfig')}/"
    assert status["endpoints"]["autoconfig"]["public"] == endpoint


def test_status_lists_the_records_to_publish(status):
    records = {(r["purpose"], r["type"], r["name"]): r["value"] for r in status["domain"]["status"]["dnsRecords"]}
    assert records[("SRV", "SRV", "_submission._tcp.example.com.")] == "10 1 587 mail.example.com."
    assert records[("SRV", "SRV", "_imap._tcp.example.com.")] == "10 1 143 mail.example.com."
    # The quickstart names no TLS Secret: on Kubernetes its implicit-TLS ports stay closed (RFC 6186 ".").
    assert records[("SRV", "SRV", "_imaps._tcp.example.com.")] == "0 0 0 ."
    assert records[("MTA-STS", "TXT", "_mta-sts.example.com.")].startswith("v=STSv1; id=")
    assert records[("TLS-RPT", "TXT", "_smtp._tls.example.com.")] == "v=TLSRPTv1; rua=mailto:postmaster@example.com"
    assert records[("Autoconfig", "CNAME", "autoconfig.example.com.")] == "mail.example.com."
    assert records[("Autodiscover", "SRV", "_autodiscover._tcp.example.com.")] == "0 1 443 autodiscover.example.com."


def test_status_prints_the_records_as_a_zone_a_dns_server_loads(live, status):
    """`correo status --dns`: the same records as the status, as zone-file lines;
    the table points at it."""
    import dns.rdatatype
    import dns.zone
    assert "DNS records to publish: correo status --dns" in live.run("status").stdout
    text = live.run("status", "--dns").stdout
    assert text.startswith("; MailDomain default/example-com: the DNS records to publish")
    zone = dns.zone.from_text(text, origin="example.com.", relativize=False, check_origin=False)
    got = sorted((str(name), dns.rdatatype.to_text(rds.rdtype),
                  b"".join(rd.strings).decode() if rds.rdtype == dns.rdatatype.TXT else rd.to_text())
                 for name, rds in zone.iterate_rdatasets() for rd in rds)
    want = sorted((r["name"], r["type"], r["value"]) for r in status["domain"]["status"]["dnsRecords"])
    assert got == want and any(t == "SRV" for _, t, _ in got)


def test_a_client_set_up_from_thunderbird_autoconfig_logs_in_everywhere_sends_and_reads(live, endpoint, tls):
    servers = thunderbird_servers(endpoint, "alice@example.com")
    assert {(p, s) for p, _, _, s, _ in servers} == {("imap", "tls"), ("imap", "starttls"), ("pop3", "tls"),
                                                     ("pop3", "starttls"), ("smtp", "tls"), ("smtp", "starttls")}
    for protocol, host, port, security, user in servers:
        close(protocol, log_in(protocol, host, port, security, tls, user))

    # Alice sends with the first outgoing server; Bob reads with his first incoming one.
    protocol, host, port, security, user = next(s for s in servers if s[0] == "smtp")
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "bob@example.com", "set up by autoconfig"
    msg.set_content("It found its own way.\n")
    smtp = log_in(protocol, host, port, security, tls, user)
    smtp.send_message(msg)
    smtp.quit()
    protocol, host, port, security, user = next(s for s in thunderbird_servers(endpoint, "bob@example.com")
                                                if s[0] == "imap")

    def arrived():
        imap = log_in(protocol, host, port, security, tls, user)
        try:
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", '"set up by autoconfig"')
            return bool(found[0].split())
        finally:
            imap.logout()
    live.wait_for(arrived, what="the message in Bob's INBOX")


def test_autodiscover_names_ports_that_answer(endpoint, tls):
    body = ("<Autodiscover xmlns='http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006'>"
            "<Request><EMailAddress>bob@example.com</EMailAddress><AcceptableResponseSchema>"
            "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
            "</AcceptableResponseSchema></Request></Autodiscover>").encode()
    status, _, out = fetch(urllib.parse.urljoin(endpoint, "/autodiscover/autodiscover.xml"), data=body)
    assert status == 200
    protocols = ET.fromstring(out).findall(f".//{R2006A}Protocol")
    assert len(protocols) == 6
    for p in protocols:
        get = lambda tag: p.findtext(f"{R2006A}{tag}")  # noqa: E731
        security = {"SSL": "tls", "TLS": "starttls", "None": "plain"}[get("Encryption")]
        client = log_in(get("Type").lower(), get("Server"), int(get("Port")), security, tls, get("LoginName"))
        close(get("Type").lower(), client)


def test_the_apple_profile_names_ports_that_answer(endpoint, tls):
    status, headers, body = fetch(urllib.parse.urljoin(endpoint, "/mail.mobileconfig?emailaddress=bob%40example.com"))
    assert status == 200 and headers["Content-Type"] == "application/x-apple-aspen-config"
    (mail,) = plistlib.loads(body)["PayloadContent"]
    imap = log_in("imap", mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
                  "tls" if mail["IncomingMailServerUseSSL"] else "plain", tls, mail["IncomingMailServerUsername"])
    imap.logout()
    smtp = log_in("smtp", mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
                  "tls" if mail["OutgoingMailServerUseSSL"] else "plain", tls, mail["OutgoingMailServerUsername"])
    smtp.quit()


def test_the_mta_sts_policy_is_served_with_the_announced_id(endpoint, status):
    code, headers, body = fetch(urllib.parse.urljoin(endpoint, "/.well-known/mta-sts.txt"), host="mta-sts.example.com")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert check_rfc8461_policy(text) == {"version": ["STSv1"], "mode": ["testing"], "mx": ["mail.example.com"],
                                          "max_age": ["604800"]}
    announced = next(r["value"] for r in status["domain"]["status"]["dnsRecords"]
                     if r["name"] == "_mta-sts.example.com.")
    assert announced == f"v=STSv1; id={stspolicy.policy_id(text)}"
