"""The documents mail clients configure themselves from; pure.

From the configuration (``correo.yaml``: the domains, the TLS setting, the
mailstore's protocols and ``autoconfig.clientHost``/``clientPorts``), an
:class:`Account` lists the servers a client should use, best first:
implicit TLS (IMAPS 993, POP3S 995, SMTPS 465, RFC 8314 section 3), then
STARTTLS (143, 110, 587); without a TLS key pair, the plain-text ports (where
only loopback may log in).  Each format is one function of an Account:

* :func:`thunderbird` — Mozilla's ``config-v1.1.xml`` (Thunderbird, K-9/
  Thunderbird for Android, Evolution, KMail, Nextcloud Mail);
* :func:`autodiscover` — Microsoft's POX Autodiscover response for the
  ``outlook`` response schema (Outlook's IMAP/POP3/SMTP accounts), and
  :func:`autodiscover_request` to read the client's request;
* :func:`mobileconfig` — an Apple configuration profile (iOS, iPadOS,
  macOS Mail).  It is **unsigned**: the device shows it as "Unverified"
  before installing; signing needs the organisation's own certificate and
  is left to it.  It holds no password (the device asks for it).

No password or other secret is in any of them; the same request gives the
same bytes (the profile's UUIDs derive from the domain and address).
"""
from __future__ import annotations

import plistlib
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..config import Domain, ServerConfig

IMPLICIT, STARTTLS, PLAIN = "tls", "starttls", "plain"
MAX_REQUEST_BYTES = 16 * 1024
RESPONSE_2006 = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_2006A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"]{1,64}@([A-Za-z0-9.-]{1,253})$")


@dataclass(frozen=True)
class Server:
    protocol: str  # "imap", "pop3", "smtp"
    host: str
    port: int
    security: str  # IMPLICIT, STARTTLS or PLAIN


@dataclass(frozen=True)
class Account:
    domain: Domain  # the hosted domain (canonical name and aliases)
    address: str | None  # the user's address, when the client said it
    display_name: str
    incoming: tuple[Server, ...]  # IMAP first, then POP3; each TLS first
    outgoing: tuple[Server, ...]


class BadRequest(ValueError):
    """A request the documents cannot be made for; the message says why."""


def address_domain(address: str) -> str:
    """The domain of an address a client sent; BadRequest when it is not one."""
    m = _ADDRESS.match(address.strip())
    if not m:
        raise BadRequest(f"{address[:100]!r} is not a mail address")
    return m.group(1).lower().rstrip(".")


def account(cfg: ServerConfig, domain: Domain, address: str | None = None) -> Account:
    ac, ports, tls = cfg.autoconfig, cfg.autoconfig.client_ports, cfg.tls is not None
    host = ac.client_host or domain.hostname or cfg.hostname

    def pair(protocol: str, implicit: int, starttls: int) -> list[Server]:
        if tls:
            return [Server(protocol, host, implicit, IMPLICIT), Server(protocol, host, starttls, STARTTLS)]
        return [Server(protocol, host, starttls, PLAIN)]

    incoming = ((pair("imap", ports.imaps, ports.imap) if cfg.mailstore.imap_enabled else [])
                + (pair("pop3", ports.pop3s, ports.pop3) if cfg.mailstore.pop3_enabled else []))
    return Account(domain=domain, address=address.strip() if address else None,
                   display_name=domain.display_name or domain.name, incoming=tuple(incoming),
                   outgoing=tuple(pair("smtp", ports.smtps, ports.submission)))


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


# ---------------------------------------------------------------------------
# Thunderbird autoconfig (config-v1.1.xml)
# ---------------------------------------------------------------------------

_SOCKET_TYPE = {IMPLICIT: "SSL", STARTTLS: "STARTTLS", PLAIN: "plain"}


def thunderbird(acc: Account) -> bytes:
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=acc.domain.name)
    for name in acc.domain.all_names:
        _sub(provider, "domain", name)
    _sub(provider, "displayName", acc.display_name)
    _sub(provider, "displayShortName", acc.display_name)
    for tag, servers in (("incomingServer", acc.incoming), ("outgoingServer", acc.outgoing)):
        for s in servers:
            el = _sub(provider, tag, type=s.protocol)
            _sub(el, "hostname", s.host)
            _sub(el, "port", s.port)
            _sub(el, "socketType", _SOCKET_TYPE[s.security])
            _sub(el, "authentication", "password-cleartext")
            _sub(el, "username", "%EMAILADDRESS%")
    return _xml(root)


# ---------------------------------------------------------------------------
# Microsoft Autodiscover (POX)
# ---------------------------------------------------------------------------

def autodiscover_request(body: bytes) -> tuple[str, str]:
    """(EMailAddress, AcceptableResponseSchema) of a POX request; BadRequest
    when it is not one.  Entity declarations are refused before parsing."""
    if len(body) > MAX_REQUEST_BYTES:
        raise BadRequest(f"the request is larger than {MAX_REQUEST_BYTES} bytes")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise BadRequest("document type declarations are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise BadRequest(f"the request is not XML: {exc}") from None
    found: dict[str, str] = {}
    for el in root.iter():
        local = el.tag.rpartition("}")[2]
        if local in ("EMailAddress", "AcceptableResponseSchema") and el.text:
            found.setdefault(local, el.text.strip())
    if root.tag.rpartition("}")[2] != "Autodiscover" or "EMailAddress" not in found:
        raise BadRequest("not an Autodiscover request with an EMailAddress")
    return found["EMailAddress"], found.get("AcceptableResponseSchema", OUTLOOK_2006A)


def autodiscover(acc: Account) -> bytes:
    root = ET.Element("Autodiscover", xmlns=RESPONSE_2006)
    response = _sub(root, "Response", xmlns=OUTLOOK_2006A)
    if acc.address:
        _sub(_sub(response, "User"), "DisplayName", acc.address)
    account_el = _sub(response, "Account")
    _sub(account_el, "AccountType", "email")
    _sub(account_el, "Action", "settings")
    for s in (*acc.incoming, *acc.outgoing):
        proto = _sub(account_el, "Protocol")
        _sub(proto, "Type", s.protocol.upper())
        _sub(proto, "Server", s.host)
        _sub(proto, "Port", s.port)
        _sub(proto, "DomainRequired", "off")
        if acc.address:
            _sub(proto, "LoginName", acc.address)
        _sub(proto, "SPA", "off")
        _sub(proto, "SSL", "off" if s.security == PLAIN else "on")
        _sub(proto, "Encryption", {IMPLICIT: "SSL", STARTTLS: "TLS", PLAIN: "None"}[s.security])
        _sub(proto, "AuthRequired", "on")
        if s.protocol == "smtp":
            _sub(proto, "UsePOPAuth", "on")  # the same login as for reading
    return _xml(root)


def autodiscover_error(code: int, message: str) -> bytes:
    """A POX error response (600: invalid request, 601: schema not available)."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_2006)
    error = _sub(_sub(root, "Response"), "Error", Time="00:00:00.0000000", Id="0")
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    _sub(error, "DebugData")
    return _xml(root)


# ---------------------------------------------------------------------------
# Apple configuration profile (.mobileconfig)
# ---------------------------------------------------------------------------

def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "correo:" + "/".join(parts))).upper()


def mobileconfig(acc: Account) -> bytes:
    """An unsigned profile with one Mail payload (the best IMAP, else POP3,
    server; SMTP with the same login)."""
    if not acc.incoming:
        raise BadRequest("the domain serves neither IMAP nor POP3")
    incoming, outgoing = acc.incoming[0], acc.outgoing[0]
    who = acc.address or acc.domain.name
    reverse = ".".join(reversed(acc.domain.name.split(".")))
    mail: dict = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.correo.mail.account",
        "PayloadUUID": _uuid(acc.domain.name, who, "mail"),
        "PayloadDisplayName": f"{acc.display_name} mail",
        "EmailAccountDescription": acc.address or acc.display_name,
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "IncomingMailServerHostName": incoming.host,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": incoming.security != PLAIN,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": outgoing.host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": outgoing.security != PLAIN,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
        "PreventMove": False,
        "PreventAppSheet": False,
        "SMIMEEnabled": False,
        "allowMailDrop": False,
    }
    if acc.address:
        mail |= {"EmailAddress": acc.address, "IncomingMailServerUsername": acc.address,
                 "OutgoingMailServerUsername": acc.address}
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{reverse}.correo.mail",
        "PayloadUUID": _uuid(acc.domain.name, who),
        "PayloadDisplayName": f"{acc.display_name} mail",
        "PayloadDescription": f"Sets up the mail account {who} (IMAP/POP3 and SMTP). "
                              "The password is asked for on the device.",
        "PayloadOrganization": acc.display_name,
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
