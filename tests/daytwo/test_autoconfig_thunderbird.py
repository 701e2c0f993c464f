"""The Thunderbird document read the way Thunderbird reads it
(:mod:`thunderbird_reader`): the account it sets up for a user, its
alternatives, and, to show the reader has teeth, the same document broken
in the ways a hand-written one often is, each refused."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from daytwo_support import maildomain, server_config
from thunderbird_reader import NotAccepted, read, replace_variables

from correo_server.autoconfig import documents as docs


def document(address="alice@example.com", **spec) -> bytes:
    spec.setdefault("tls", {"secretName": "mail-tls"})
    spec.setdefault("hostname", "mail.example.com")
    cfg = server_config(maildomain(**spec))
    return docs.thunderbird(docs.account(cfg, cfg.domains[0], address))


def summary(server):
    return (server.type, server.hostname, server.port, server.socket_type, server.auth, server.username)


def test_thunderbird_sets_up_imap_over_tls_and_submission_over_tls_with_the_address_as_login():
    config = replace_variables(read(document(aliasDomains=["example.net"]), "application/xml"), "alice@example.com")
    assert config.id == "example.com" and config.domains == ["example.com", "example.net"]
    assert summary(config.incoming) == ("imap", "mail.example.com", 993, "SSL", "password-cleartext",
                                        "alice@example.com")
    assert summary(config.outgoing) == ("smtp", "mail.example.com", 465, "SSL", "password-cleartext",
                                        "alice@example.com")
    assert [summary(s)[:4] for s in config.incoming_alternatives] == [
        ("imap", "mail.example.com", 143, "STARTTLS"), ("pop3", "mail.example.com", 995, "SSL"),
        ("pop3", "mail.example.com", 110, "STARTTLS")]
    assert [summary(s)[:4] for s in config.outgoing_alternatives] == [("smtp", "mail.example.com", 587, "STARTTLS")]


def test_without_a_certificate_thunderbird_reads_the_plain_ports_only():
    # (where only loopback may log in: a test or a local stack without TLS)
    config = read(document(tls=None), "text/xml; charset=utf-8")
    assert {s.socket_type for s in config.servers} == {"plain"}
    assert (config.incoming.port, config.outgoing.port) == (143, 587)


def test_a_pop3_only_domain_sets_up_pop3():
    config = read(document(mailstore={"imap": False}), "application/xml")
    assert (config.incoming.type, config.incoming.port) == ("pop3", 995)


def _broken(change) -> bytes:
    root = ET.fromstring(document())
    change(root.find("emailProvider"))
    return ET.tostring(root)


def _every(tag, sub, value):
    def change(provider):
        for server in provider.findall(tag):
            server.find(sub).text = value
    return change


def _drop_all(tag):
    def change(provider):
        for el in provider.findall(tag):
            provider.remove(el)
    return change


def _drop_child(tag, sub):
    def change(provider):
        for el in provider.findall(tag):
            el.remove(el.find(sub))
    return change


@pytest.mark.parametrize("change, why", [
    (_every("incomingServer", "socketType", "TLS"), "socketType"),
    (_every("outgoingServer", "socketType", "ssl"), "socketType"),
    (_every("incomingServer", "port", "0"), "port"),
    (_every("outgoingServer", "port", "65536"), "port"),
    (_every("incomingServer", "hostname", "mail example.com"), "host name"),
    (_every("incomingServer", "authentication", "password"), "authentication"),
    (_drop_child("incomingServer", "username"), "username"),
    (_drop_child("outgoingServer", "username"), "username"),
    (_drop_all("incomingServer"), "incomingServer"),
    (_drop_all("outgoingServer"), "outgoingServer"),
    (_drop_all("domain"), "domain"),
])
def test_what_thunderbird_would_refuse_is_refused(change, why):
    with pytest.raises(NotAccepted, match=why):
        read(_broken(change), "application/xml")


def test_one_bad_server_is_skipped_and_the_next_becomes_the_account():
    def change(provider):
        provider.find("incomingServer").find("port").text = "imaps"
    config = read(_broken(change), "application/xml")
    assert (config.incoming.port, config.incoming.socket_type) == (143, "STARTTLS")


def test_the_wrong_content_type_is_no_configuration_at_all():
    with pytest.raises(NotAccepted, match="Content-Type"):
        read(document(), "text/plain")
    with pytest.raises(NotAccepted, match="emailProvider"):
        read(b"<clientConfig version='1.1'/>", "application/xml")
