"""The autoconfiguration documents, checked against their formats: Mozilla's
config-v1.1.xml, Microsoft's POX Autodiscover (request and response), Apple's
configuration profile (a property list with the keys the Mail payload
needs).  Made from a MailDomain through the renderer, as in a pod."""
from __future__ import annotations

import plistlib
import re
import uuid
import xml.etree.ElementTree as ET

import pytest
from daytwo_support import maildomain, server_config

from correo_server.autoconfig import documents as docs

AD_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
R2006 = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
R2006A = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def account(address="alice@example.com", **spec):
    spec.setdefault("tls", {"secretName": "mail-tls"})
    cfg = server_config(maildomain(**spec))
    return docs.account(cfg, cfg.domains[0], address)


def servers(acc):
    return [(s.protocol, s.port, s.security) for s in (*acc.incoming, *acc.outgoing)]


class TestAccount:
    def test_implicit_tls_first_then_starttls_with_standard_ports(self):
        acc = account(hostname="mx.example.com")
        assert {s.host for s in (*acc.incoming, *acc.outgoing)} == {"mx.example.com"}
        assert servers(acc) == [("imap", 993, "tls"), ("imap", 143, "starttls"), ("pop3", 995, "tls"),
                                ("pop3", 110, "starttls"), ("smtp", 465, "tls"), ("smtp", 587, "starttls")]

    def test_without_a_certificate_only_the_plain_ports(self):
        acc = account(tls=None)
        assert servers(acc) == [("imap", 143, "plain"), ("pop3", 110, "plain"), ("smtp", 587, "plain")]

    def test_disabled_protocols_are_not_offered(self):
        assert [s.protocol for s in account(mailstore={"pop3": False}).incoming] == ["imap", "imap"]
        assert [s.protocol for s in account(mailstore={"imap": False}).incoming] == ["pop3", "pop3"]

    @pytest.mark.parametrize("bad", ["alice", "alice@", "@example.com", "a b@example.com", "<x>@example.com"])
    def test_what_is_not_an_address_is_a_bad_request(self, bad):
        with pytest.raises(docs.BadRequest):
            docs.address_domain(bad)


class TestThunderbird:
    """https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat"""

    def test_the_config_file_has_what_thunderbird_reads(self):
        body = docs.thunderbird(account(aliasDomains=["example.net"],
                                        autoconfig={"displayName": "Example Mail"}))
        assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
        root = ET.fromstring(body)
        assert root.tag == "clientConfig" and root.get("version") == "1.1"
        (provider,) = root
        assert provider.tag == "emailProvider" and provider.get("id") == "example.com"
        assert [d.text for d in provider.findall("domain")] == ["example.com", "example.net"]
        assert provider.findtext("displayName") == "Example Mail"
        assert provider.findtext("displayShortName") == "Example Mail"
        seen = []
        for el in provider.findall("incomingServer") + provider.findall("outgoingServer"):
            kind = el.get("type")
            assert kind in ({"imap", "pop3"} if el.tag == "incomingServer" else {"smtp"})
            assert [c.tag for c in el] == ["hostname", "port", "socketType", "authentication", "username"]
            assert el.findtext("hostname") == "mail.example.com"
            assert el.findtext("socketType") in ("plain", "SSL", "STARTTLS")
            assert el.findtext("authentication") == "password-cleartext"  # over TLS: what correo accepts
            assert el.findtext("username") == "%EMAILADDRESS%"
            seen.append((kind, int(el.findtext("port")), el.findtext("socketType")))
        assert seen == [("imap", 993, "SSL"), ("imap", 143, "STARTTLS"), ("pop3", 995, "SSL"),
                        ("pop3", 110, "STARTTLS"), ("smtp", 465, "SSL"), ("smtp", 587, "STARTTLS")]

    def test_the_document_carries_no_secret_and_is_the_same_every_time(self):
        a, b = docs.thunderbird(account()), docs.thunderbird(account())
        assert a == b and b"password" not in a.replace(b"password-cleartext", b"")


class TestAutodiscover:
    """POX Autodiscover, the ``outlook`` schemas (MS-OXDSCLI)."""

    def request(self, address="alice@example.com", schema=docs.OUTLOOK_2006A) -> bytes:
        return (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{AD_REQUEST}"><Request>'
                f"<EMailAddress>{address}</EMailAddress>"
                f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema></Request></Autodiscover>").encode()

    def test_the_request_gives_address_and_schema(self):
        assert docs.autodiscover_request(self.request()) == ("alice@example.com", docs.OUTLOOK_2006A)

    @pytest.mark.parametrize("body, why", [
        (b"not xml", "not XML"),
        (b"<Other><EMailAddress>a@b.c</EMailAddress></Other>", "not an Autodiscover request"),
        (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
         b"<Autodiscover><Request><EMailAddress>&lol2;</EMailAddress></Request></Autodiscover>", "declarations"),
        (b"<Autodiscover>" + b" " * (docs.MAX_REQUEST_BYTES + 1) + b"</Autodiscover>", "larger"),
    ])
    def test_bad_requests_are_refused_before_they_cost_anything(self, body, why):
        with pytest.raises(docs.BadRequest, match=why):
            docs.autodiscover_request(body)

    def test_the_response_has_what_outlook_reads(self):
        root = ET.fromstring(docs.autodiscover(account()))
        assert root.tag == f"{R2006}Autodiscover"
        response = root.find(f"{R2006A}Response")
        acc = response.find(f"{R2006A}Account")
        assert acc.findtext(f"{R2006A}AccountType") == "email" and acc.findtext(f"{R2006A}Action") == "settings"
        protocols = acc.findall(f"{R2006A}Protocol")
        seen = []
        for p in protocols:
            get = lambda tag: p.findtext(f"{R2006A}{tag}")  # noqa: E731
            assert get("Type") in ("IMAP", "POP3", "SMTP")
            assert get("Server") == "mail.example.com"
            assert get("LoginName") == "alice@example.com"
            assert get("SPA") == "off" and get("AuthRequired") == "on" and get("DomainRequired") == "off"
            assert get("SSL") in ("on", "off") and get("Encryption") in ("None", "SSL", "TLS", "Auto")
            seen.append((get("Type"), int(get("Port")), get("Encryption")))
        assert seen == [("IMAP", 993, "SSL"), ("IMAP", 143, "TLS"), ("POP3", 995, "SSL"), ("POP3", 110, "TLS"),
                        ("SMTP", 465, "SSL"), ("SMTP", 587, "TLS")]

    @pytest.mark.parametrize("code", [600, 601])
    def test_errors_are_pox_error_responses(self, code):
        root = ET.fromstring(docs.autodiscover_error(code, "nope"))
        error = root.find(f"{R2006}Response/{R2006}Error")
        assert error.findtext(f"{R2006}ErrorCode") == str(code) and error.findtext(f"{R2006}Message") == "nope"


class TestMobileconfig:
    """Apple's Configuration Profile Reference: the top-level payload and a
    ``com.apple.mail.managed`` payload."""

    TOP = {"PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "PayloadDisplayName",
           "PayloadContent"}
    MAIL = {"PayloadType", "PayloadVersion", "PayloadIdentifier", "PayloadUUID", "EmailAccountType",
            "IncomingMailServerHostName", "IncomingMailServerPortNumber", "IncomingMailServerUseSSL",
            "IncomingMailServerAuthentication", "OutgoingMailServerHostName", "OutgoingMailServerPortNumber",
            "OutgoingMailServerUseSSL", "OutgoingMailServerAuthentication"}

    def test_the_profile_is_a_valid_property_list_with_a_mail_payload(self):
        body = docs.mobileconfig(account())
        assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist')
        profile = plistlib.loads(body, fmt=plistlib.FMT_XML)
        assert self.TOP <= set(profile) and profile["PayloadType"] == "Configuration"
        assert profile["PayloadVersion"] == 1
        (mail,) = profile["PayloadContent"]
        assert self.MAIL <= set(mail) and mail["PayloadType"] == "com.apple.mail.managed"
        for uid in (profile["PayloadUUID"], mail["PayloadUUID"]):
            assert str(uuid.UUID(uid)).upper() == uid
        assert profile["PayloadUUID"] != mail["PayloadUUID"]
        assert re.fullmatch(r"[A-Za-z0-9.-]+", mail["PayloadIdentifier"])
        assert mail["EmailAccountType"] == "EmailTypeIMAP" and mail["EmailAddress"] == "alice@example.com"
        assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
                mail["IncomingMailServerUseSSL"]) == ("mail.example.com", 993, True)
        assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"],
                mail["OutgoingMailServerUseSSL"]) == ("mail.example.com", 465, True)
        assert mail["IncomingMailServerAuthentication"] == mail["OutgoingMailServerAuthentication"] == "EmailAuthPassword"
        assert mail["IncomingMailServerUsername"] == "alice@example.com"
        assert mail["OutgoingPasswordSameAsIncomingPassword"] is True
        assert not any("Password" in k and k not in ("OutgoingPasswordSameAsIncomingPassword",)
                       and not k.endswith("Authentication") for k in mail)  # no password in it

    def test_installing_again_replaces_the_profile_and_other_users_get_their_own(self):
        alice = plistlib.loads(docs.mobileconfig(account()))
        again = plistlib.loads(docs.mobileconfig(account()))
        bob = plistlib.loads(docs.mobileconfig(account("bob@example.com")))
        assert alice["PayloadUUID"] == again["PayloadUUID"] != bob["PayloadUUID"]

    def test_pop3_only_domains_get_a_pop_account(self):
        mail = plistlib.loads(docs.mobileconfig(account(mailstore={"imap": False})))["PayloadContent"][0]
        assert (mail["EmailAccountType"], mail["IncomingMailServerPortNumber"]) == ("EmailTypePOP", 995)

    def test_a_domain_without_imap_and_pop3_gets_no_profile(self):
        with pytest.raises(docs.BadRequest, match="neither IMAP nor POP3"):
            docs.mobileconfig(account(mailstore={"imap": False, "pop3": False}))
