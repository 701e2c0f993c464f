"""A config-v1.1.xml reader that follows Thunderbird's rules, for the tests.

Written from Thunderbird's account-setup code as published (comm-central
``mailnews/base/prefs/content/accountcreation``: ``FetchHTTP`` decides from
the Content-Type whether the body is XML, ``JXON`` turns the XML into
objects, ``readFromXML`` reads them through the ``Sanitizer``), so that a
document it accepts is one Thunderbird would set an account up from:

* the response is XML only if its Content-Type is ``text/xml``,
  ``application/xml`` or ``text/rdf`` (anything else is text, and then there is
  no ``<emailProvider>``);
* ``<clientConfig><emailProvider id=HOST>`` with at least one valid
  ``<domain>`` (a host name);
* each ``<incomingServer>``: ``type`` one of pop3/imap/nntp/exchange, a host
  name, a port in 1..65535, a ``<username>``, the first ``<socketType>`` it
  supports (plain, SSL, STARTTLS) and the first ``<authentication>`` it
  supports; an invalid server is skipped, the first valid one is the account,
  the others alternatives; none valid: refused;
* each ``<outgoingServer>``: ``type="smtp"``, the same host, port, socket
  and authentication rules (plus none/client-IP-address/smtp-after-pop), a
  username whenever the authentication is by password;
* then ``%EMAILADDRESS%``, ``%EMAILLOCALPART%``, ``%EMAILDOMAIN%`` and
  ``%REALNAME%`` are replaced with what the user typed.

Host names follow the Sanitizer: placeholders allowed, otherwise only
letters, digits, ``-``, ``.`` and ``_``, lower-cased.  Text content is
trimmed, as JXON does.
"""
from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

XML_TYPES = ("text/xml", "application/xml", "text/rdf")
INCOMING_TYPES = ("pop3", "imap", "nntp", "exchange")
SOCKET_TYPES = ("plain", "SSL", "STARTTLS")
PASSWORD_AUTH = ("password-cleartext", "plain", "password-encrypted", "secure")
INCOMING_AUTH = (*PASSWORD_AUTH, "GSSAPI", "NTLM")  # OAuth2 only for hosts Thunderbird knows
OUTGOING_AUTH = ("none", "client-IP-address", "smtp-after-pop", *INCOMING_AUTH)


class NotAccepted(Exception):
    """Thunderbird would not set an account up from this document."""


@dataclasses.dataclass
class Server:
    type: str
    hostname: str
    port: int
    socket_type: str
    auth: str
    username: str | None


@dataclasses.dataclass
class AccountConfig:
    id: str
    display_name: str
    domains: list[str]
    incoming: Server
    incoming_alternatives: list[Server]
    outgoing: Server
    outgoing_alternatives: list[Server]

    @property
    def servers(self) -> list[Server]:
        return [self.incoming, *self.incoming_alternatives, self.outgoing, *self.outgoing_alternatives]


# -- the Sanitizer's checks ------------------------------------------------------

def _nonempty(value: str | None, what: str) -> str:
    if not value:
        raise NotAccepted(f"{what} is empty or missing")
    return value


def hostname(value: str | None, what: str = "hostname") -> str:
    text = _nonempty(value, what)
    if re.fullmatch(r"[a-zA-Z0-9\-.]*(%[A-Z0-9]+%[a-zA-Z0-9\-.]*)+", text):
        return text  # a placeholder, replaced later
    if re.search(r"[^a-zA-Z0-9\-._]", text):
        raise NotAccepted(f"{what} {text!r} is not a host name")
    return text.lower()


def integer_range(value: str | None, low: int, high: int, what: str) -> int:
    text = _nonempty(value, what)
    if not re.fullmatch(r"[+-]?\d+", text):
        raise NotAccepted(f"{what} {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise NotAccepted(f"{what} {number} is not within {low}..{high}")
    return number


def first_supported(values: list[str], allowed: tuple[str, ...], what: str) -> str:
    for value in values:
        if value in allowed:
            return value
    raise NotAccepted(f"no supported {what} among {values!r}")


# -- JXON-like access --------------------------------------------------------------

def _text(el: ET.Element | None) -> str | None:
    return None if el is None else "".join(el.itertext()).strip()


def _texts(parent: ET.Element, tag: str) -> list[str]:
    return [_text(el) or "" for el in parent.findall(tag)]


def _server(el: ET.Element, outgoing: bool) -> Server:
    if outgoing:
        if el.get("type") != "smtp":
            raise NotAccepted(f"outgoing server type {el.get('type')!r} is not smtp")
        kind = "smtp"
    else:
        kind = el.get("type")
        if kind not in INCOMING_TYPES:
            raise NotAccepted(f"incoming server type {kind!r} is not supported")
    host = hostname(_text(el.find("hostname")))
    port = integer_range(_text(el.find("port")), 1, 65535, "port")
    if not outgoing and el.find("username") is None:
        raise NotAccepted("an incoming server needs a <username>")
    socket = first_supported(_texts(el, "socketType"), SOCKET_TYPES, "socketType")
    auth = first_supported(_texts(el, "authentication"), OUTGOING_AUTH if outgoing else INCOMING_AUTH,
                           "authentication")
    username = None
    if el.find("username") is not None or auth in PASSWORD_AUTH:
        username = _text(el.find("username"))
        if username is None:
            raise NotAccepted("password authentication needs a <username>")
    return Server(kind, host, port, socket, auth, username)


def read(body: bytes, content_type: str) -> AccountConfig:
    """What Thunderbird reads from a response; NotAccepted when it would give up."""
    if content_type.split(";")[0].strip().lower() not in XML_TYPES:
        raise NotAccepted(f"Content-Type {content_type!r} is not XML to Thunderbird")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise NotAccepted(f"not well-formed XML: {exc}") from None
    provider = root.find("emailProvider") if root.tag == "clientConfig" else None
    if provider is None:
        raise NotAccepted("no <clientConfig><emailProvider>")
    provider_id = hostname(provider.get("id"), "emailProvider id")
    domains = []
    for text in _texts(provider, "domain"):
        try:
            domains.append(hostname(text, "domain"))
        except NotAccepted:
            pass
    if not domains:
        raise NotAccepted("need proper <domain>")
    display = _text(provider.find("displayName")) or provider_id

    def servers(tag: str, outgoing: bool) -> list[Server]:
        good, last = [], None
        for el in provider.findall(tag):
            try:
                good.append(_server(el, outgoing))
            except NotAccepted as exc:
                last = exc
        if not good:
            raise last or NotAccepted(f"need a proper <{tag}>")
        return good

    incoming = servers("incomingServer", False)
    outgoing = servers("outgoingServer", True)
    return AccountConfig(provider_id, display, domains, incoming[0], incoming[1:], outgoing[0], outgoing[1:])


def replace_variables(config: AccountConfig, address: str, realname: str = "") -> AccountConfig:
    """The account as set up for ``address`` (Thunderbird's replaceVariables)."""
    local, _, domain = address.partition("@")
    values = {"%EMAILADDRESS%": address, "%EMAILLOCALPART%": local, "%EMAILDOMAIN%": domain, "%REALNAME%": realname}

    def sub(text: str | None) -> str | None:
        if text is None:
            return None
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    def server(s: Server) -> Server:
        return dataclasses.replace(s, hostname=sub(s.hostname), username=sub(s.username))

    return dataclasses.replace(
        config, display_name=sub(config.display_name), incoming=server(config.incoming),
        incoming_alternatives=[server(s) for s in config.incoming_alternatives],
        outgoing=server(config.outgoing), outgoing_alternatives=[server(s) for s in config.outgoing_alternatives])
