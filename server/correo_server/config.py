"""The configuration every correo server reads: defined once, here.

The renderer (``correo_operator.render``) writes these files into a ConfigMap
(``correo.yaml``) and a Secret (``directory.yaml``); on Kubernetes a projected
volume puts them, the TLS key pair and the DKIM keys into one folder, and
``correo serve relay|queue|mailstore --config DIR`` reads that folder.  The local
runtime (``correo up``) writes the same files into its data folder.

Layout of a configuration folder::

    DIR/correo.yaml          ServerConfig (this module): domains, listeners, limits
    DIR/directory.yaml       the mailbox directory (see ``directory``)
    DIR/tls/tls.crt, tls.key optional; the key pair named by ``tls`` below
    DIR/dkim/<domain>.key    optional; DKIM private keys named per domain
    DIR/srs/<domain>.keys    optional; SRS secrets per domain, one per line (the first signs)
    DIR/rspamd/password      optional; the password the relay gives rspamd

Relative paths inside ``correo.yaml`` are relative to DIR.  The format is strict:
an unknown key or a wrong type is a :class:`ConfigError` naming the file and the
key path, so that a hand-edited file fails loudly rather than half-working.
This module has no dependency on the rest of correo (it is the bottom layer).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_FILE = "correo.yaml"
DIRECTORY_FILE = "directory.yaml"
FORMAT_VERSION = 1

# Unprivileged container ports; Services map the standard ones onto them.  The
# local runtime uses the same numbers by default (DESIGN.md, "Local default ports").
DEFAULT_PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "smtps": 2465,
    "imap": 2143,
    "imaps": 2993,
    "pop3": 2110,
    "pop3s": 2995,
    "managesieve": 2419,  # the Service maps ManageSieve's 4190 onto it
    "queue_lmtp": 2424,
    "mailstore_lmtp": 2425,
    "relay_http": 8081,
    "queue_http": 8082,
    "mailstore_http": 8083,
    "autoconfig": 2080,  # the public HTTP side: client autoconfiguration, MTA-STS policy (Service port 80)
    "autoconfig_http": 8084,
    "proxy_http": 8085,
    "mailstore_moves": 8086,  # a shard's move endpoints (TLS with the stack's pair): mailbox moves between shards
}


# libyaml when present (5-10x faster on a directory of thousands of
# mailboxes); the same bytes either way.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader


def yaml_dump(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and key."""


@dataclass(frozen=True)
class Listen:
    """An address a server binds (``host:port``; ``[::1]:25`` for IPv6)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Listen":
        text = str(text).strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, sep, port = text.rpartition(":")
            if not sep:
                raise ValueError(f"{text!r} is not host:port")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} has no valid port")
        return cls(host or "0.0.0.0", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    """When the queue tries a temporarily failing recipient again, and when it gives up."""

    initial_delay_seconds: int = 300
    max_delay_seconds: int = 3600
    backoff_factor: float = 2.0
    warn_after_seconds: int = 14400  # 4 h: one "delayed" notice to the sender
    give_up_after_seconds: int = 432000  # 5 d: failure notice, recipient bounced

    def delay_after(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        delay = self.initial_delay_seconds * (self.backoff_factor ** max(attempts - 1, 0))
        return float(min(delay, self.max_delay_seconds))


@dataclass(frozen=True)
class Smarthost:
    """Send all outbound (non-hosted) mail of a domain through this relay."""

    host: str
    port: int = 587
    # "starttls" (required), "implicit" (TLS from the first byte), "opportunistic", "none"
    tls: str = "starttls"
    username_file: str | None = None
    password_file: str | None = None


@dataclass(frozen=True)
class MtaStsPolicy:
    """The MTA-STS policy (RFC 8461) a domain publishes; ``correo_server.mtasts.policy``
    turns it into the policy file and its id."""

    mode: str = "testing"  # "none", "testing" or "enforce"
    max_age_seconds: int = 604800  # one week
    mx: tuple[str, ...] = ()  # MX patterns ("mail.example.com", "*.example.net")


@dataclass(frozen=True)
class Domain:
    """One hosted domain (a MailDomain) and its alias domains."""

    name: str
    aliases: tuple[str, ...] = ()
    hostname: str = ""
    dkim_selector: str = "correo"
    dkim_key_file: str | None = None
    default_quota_bytes: int = 1 << 30
    retry: RetryPolicy = RetryPolicy()
    smarthost: Smarthost | None = None
    # Mail rules (:mod:`correo_server.addressing`): the characters that start
    # a subaddress (ana+news@), "" for none; the mailbox address that gets
    # mail for unknown addresses of the domain (None: refused, 550 5.1.1).
    recipient_delimiter: str = "+"
    catch_all: str | None = None
    display_name: str = ""  # what mail clients call the provider (autoconfig); empty: the domain
    autoconfig: bool = True  # serve client autoconfiguration documents for this domain
    mta_sts: MtaStsPolicy | None = None  # the policy the autoconfig service publishes; None: none
    # SRS secrets for mail this domain's mailboxes forward elsewhere (srs.py):
    # one per line, the first signs, all verify.  None: forwards keep their sender.
    srs_key_file: str | None = None

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class TLSFiles:
    cert_file: str = "tls/tls.crt"
    key_file: str = "tls/tls.key"


@dataclass(frozen=True)
class AuthSettings:
    """Who may log in without TLS, and what a failed login costs."""

    # "loopback": plaintext LOGIN/AUTH only from 127.0.0.0/8 and ::1 (Dovecot's
    # default); "always": from anywhere (not recommended); "never": TLS always.
    plaintext: str = "loopback"
    failure_delay_seconds: float = 1.0  # doubled per consecutive failure...
    failure_delay_max_seconds: float = 2.0  # ...up to this (Dovecot's auth_failure_delay)
    max_failures_per_session: int = 3  # then the connection is closed
    # A client that has not logged in this long after connecting is
    # disconnected (IMAP, POP3, ManageSieve, submission), idle or not, as
    # Dovecot's login processes do (3 minutes); after login the protocols'
    # own idle timeouts apply.
    login_timeout_seconds: int = 180
    # Verified logins remembered (Dovecot's auth_cache; see correo_server.logincache):
    login_cache_seconds: int = 3600  # 0: every login pays the full password hash
    login_cache_entries: int = 10000


@dataclass(frozen=True)
class SenderAuthConfig:
    """SPF, DKIM, DMARC and the own-domain rule on port 25 (``mailauth``)."""

    enabled: bool = True
    reject_spf_fail: bool = True  # SPF "fail" refused at MAIL FROM (550 5.7.23)
    protect_own_domains: bool = True  # unauthenticated mail claiming a hosted domain must prove itself
    enforce_dmarc: bool = True  # act on p=reject / p=quarantine (False: only report)


@dataclass(frozen=True)
class RspamdConfig:
    """Content scanning through rspamd's ``/checkv2`` (``scanning.rspamd``)."""

    url: str  # http://host:11333
    password_file: str | None = None  # sent as rspamd's Password header
    timeout_seconds: float = 20.0
    on_failure: str = "tempfail"  # rspamd unreachable: "tempfail" (451 4.7.1) or "accept" (unscanned)
    virus_symbols: tuple[str, ...] = ()  # symbols besides *_VIRUS that mean malware


@dataclass(frozen=True)
class DnsblZoneConfig:
    zone: str
    action: str = "reject"  # "reject", "score" or "allow"
    weight: int = 1
    return_codes: tuple[str, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class DnsblConfig:
    zones: tuple[DnsblZoneConfig, ...] = ()
    threshold: int = 0  # "score" weights that add up to this refuse (0: never)
    cache_seconds: int = 300


@dataclass(frozen=True)
class FilterConfig:
    """What the relay checks on port 25 (``defences``).  The renderer always
    writes it (the MailDomain's ``spec.filter``, whose defaults turn sender
    authentication on); a hand-written file without ``relay.filter`` runs
    port 25 without defences, and the relay says so when it starts."""

    sender_auth: SenderAuthConfig = SenderAuthConfig()
    rspamd: RspamdConfig | None = None
    dnsbl: DnsblConfig = DnsblConfig()


@dataclass(frozen=True)
class RelayConfig:
    smtp: Listen = Listen("0.0.0.0", DEFAULT_PORTS["smtp"])
    submission: Listen = Listen("0.0.0.0", DEFAULT_PORTS["submission"])
    smtps: Listen = Listen("0.0.0.0", DEFAULT_PORTS["smtps"])
    http: Listen = Listen("0.0.0.0", DEFAULT_PORTS["relay_http"])
    queue: Listen = Listen("127.0.0.1", DEFAULT_PORTS["queue_lmtp"])  # LMTP of the queue
    max_message_bytes: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_line_length: int = 998  # octets, without CRLF (RFC 5322 section 2.1.1)
    max_connections: int = 500
    max_connections_per_client: int = 20
    max_commands_per_session: int = 1000
    rate_limit_messages: int = 60  # messages per client address...
    rate_limit_period_seconds: int = 60  # ...per this many seconds
    timeout_seconds: int = 300
    # Memory bounds (issue 10): a message arriving past this many octets goes
    # to an unlinked temporary file in data_spool_dir (empty: $TMPDIR) instead
    # of memory; the messages checked and handed over at once hold at most
    # max_inflight_bytes in memory (past it: 452 4.3.1, the client retries).
    data_in_memory_bytes: int = 256 * 1024
    data_spool_dir: str = ""
    max_inflight_bytes: int = 256 * 1024 * 1024
    filter: FilterConfig | None = None  # the port-25 defences (None: none)
    # The mailstore's side port: the relay reads which mailboxes are (nearly)
    # full from its /quota and refuses at RCPT (452 4.2.2) rather than accept
    # mail that would bounce (backscatter.quota).  None: no check before delivery.
    mailstore_http: Listen | None = None
    # The queue's side port: the relay reports what it refused there, so
    # that the figures survive relay restarts and add up over replicas
    # (backscatter.refusals).  None: kept in the relay's /status only.
    queue_http: Listen | None = None


@dataclass(frozen=True)
class MtaStsClient:
    """Outbound MTA-STS (RFC 8461): the queue honours receivers' policies."""

    enabled: bool = True
    # PEM bundle of the CAs trusted for policy hosts and MX certificates (a
    # private PKI, tests); empty: the system's trust store.
    ca_file: str | None = None
    https_port: int = 443  # where policies are fetched (tests point it at loopback servers)
    fetch_timeout_seconds: int = 30
    # Where fetched policies are cached (relative paths: under the spool folder).
    cache_dir: str = "mta-sts"


@dataclass(frozen=True)
class QueueReplica:
    """One queue replica (``spec.queue.replicas`` > 1): where the relay and
    the other replicas reach its LMTP and side port (``host``), and, for the
    replica's own process, what it binds (``listen``) and its spool.  On
    Kubernetes ``host`` is the pod's DNS name behind the headless Service
    and every replica has the same ports and its own volume at
    ``queue.spoolDir``; locally each replica process has its own ports on
    loopback and its own ``spoolDir`` (:mod:`correo_server.queuereplicas`)."""

    host: str
    listen: str = "0.0.0.0"
    lmtp: int = DEFAULT_PORTS["queue_lmtp"]
    http: int = DEFAULT_PORTS["queue_http"]
    spool_dir: str | None = None  # None: queue.spoolDir (each pod has its own volume there)


@dataclass(frozen=True)
class QueueConfig:
    lmtp: Listen = Listen("0.0.0.0", DEFAULT_PORTS["queue_lmtp"])
    http: Listen = Listen("0.0.0.0", DEFAULT_PORTS["queue_http"])
    mailstore: Listen = Listen("127.0.0.1", DEFAULT_PORTS["mailstore_lmtp"])  # LMTP of the mailstore
    spool_dir: str = "/var/lib/correo/queue"
    max_message_bytes: int = 25 * 1024 * 1024
    concurrency_total: int = 20
    concurrency_per_destination: int = 4
    # DNS resolvers as "host:port" (empty: the system's resolver)
    nameservers: tuple[str, ...] = ()
    # The TCP port of remote MX hosts (25; tests point it at loopback servers)
    remote_smtp_port: int = 25
    connect_timeout_seconds: int = 30
    command_timeout_seconds: int = 300
    min_free_bytes: int = 64 * 1024 * 1024  # below this free space: 452 4.3.1
    mta_sts: MtaStsClient = MtaStsClient()
    # Queue replicas (correo_server.queuereplicas): the replicas that take
    # mail, by ordinal; empty: one queue at relay.queue.  ``replica`` is set
    # only in a replica's own process (``correo serve queue --replica N``),
    # never in the file; a replica whose ordinal is not listed any more is
    # leaving: it drains its spool into the listed ones.
    replicas: tuple[QueueReplica, ...] = ()
    replica: int | None = None


@dataclass(frozen=True)
class MailstoreShard:
    """One mailstore shard (``spec.mailstore.shards`` > 1): where the queue,
    the proxy and the operator reach it (``host``), and, for the shard's own
    process, what it binds (``listen``) and where its mail lives.  On
    Kubernetes ``host`` is the pod's DNS name behind the headless Service and
    every shard has the same ports; locally each shard process has its own
    ports on loopback and its own ``dataDir``."""

    host: str
    listen: str = "0.0.0.0"
    lmtp: int = DEFAULT_PORTS["mailstore_lmtp"]
    imap: int = DEFAULT_PORTS["imap"]
    pop3: int = DEFAULT_PORTS["pop3"]
    managesieve: int = DEFAULT_PORTS["managesieve"]
    http: int = DEFAULT_PORTS["mailstore_http"]
    moves: int = DEFAULT_PORTS["mailstore_moves"]  # the move endpoints (correo_server.mailstore.moveport)
    data_dir: str | None = None  # None: mailstore.dataDir (each pod has its own volume there)


@dataclass(frozen=True)
class MailstoreConfig:
    imap: Listen = Listen("0.0.0.0", DEFAULT_PORTS["imap"])
    imaps: Listen = Listen("0.0.0.0", DEFAULT_PORTS["imaps"])
    pop3: Listen = Listen("0.0.0.0", DEFAULT_PORTS["pop3"])
    pop3s: Listen = Listen("0.0.0.0", DEFAULT_PORTS["pop3s"])
    managesieve: Listen = Listen("0.0.0.0", DEFAULT_PORTS["managesieve"])
    lmtp: Listen = Listen("0.0.0.0", DEFAULT_PORTS["mailstore_lmtp"])
    http: Listen = Listen("0.0.0.0", DEFAULT_PORTS["mailstore_http"])
    moves: Listen = Listen("0.0.0.0", DEFAULT_PORTS["mailstore_moves"])  # a shard's move endpoints
    # The queue's LMTP: where mail rules send what they make (vacation
    # replies, redirects, reject notices), as new messages.
    queue: Listen = Listen("127.0.0.1", DEFAULT_PORTS["queue_lmtp"])
    data_dir: str = "/var/lib/correo/mail"
    imap_enabled: bool = True
    pop3_enabled: bool = True
    managesieve_enabled: bool = False  # RFC 5804 with STARTTLS; the renderer turns it on
    # Over quota at delivery: "reject" answers 552 5.2.2, "defer" 452 4.2.2.
    over_quota: str = "reject"
    max_line_length: int = 65536
    max_literal_bytes: int = 64 * 1024 * 1024
    # Literals held in memory at once over all IMAP sessions (APPEND...): past
    # it a client is told NO [LIMIT] and tries again (issue 10's memory budget).
    max_inflight_literal_bytes: int = 256 * 1024 * 1024
    max_connections: int = 1000
    max_connections_per_client: int = 50
    imap_idle_timeout_seconds: int = 1800  # RFC 3501: autologout not under 30 min
    pop3_idle_timeout_seconds: int = 600  # RFC 1939: at least 10 min
    min_free_bytes: int = 64 * 1024 * 1024  # below this free space: 452 4.3.1
    # Scale-out (correo_server.shards): the shards, by id; empty: one mailstore,
    # no proxy.  ``shard`` is set only in a shard's own process (``correo serve
    # mailstore --shard N``), never in the file.
    shards: tuple[MailstoreShard, ...] = ()
    shard: int | None = None
    # The proxy's credential (a file holding the shared secret): a login with
    # SASL PLAIN authcid ``proxyUser`` and this secret may act as any mailbox
    # of this shard (its authzid).  None: no proxy logins.
    proxy_secret_file: str | None = None
    proxy_user: str = "correo-proxy"


@dataclass(frozen=True)
class ProxyConfig:
    """``correo serve proxy`` (:mod:`correo_server.proxy`): the public IMAP,
    POP3 and ManageSieve ports in front of the mailstore shards."""

    imap: Listen = Listen("0.0.0.0", DEFAULT_PORTS["imap"])
    imaps: Listen = Listen("0.0.0.0", DEFAULT_PORTS["imaps"])
    pop3: Listen = Listen("0.0.0.0", DEFAULT_PORTS["pop3"])
    pop3s: Listen = Listen("0.0.0.0", DEFAULT_PORTS["pop3s"])
    managesieve: Listen = Listen("0.0.0.0", DEFAULT_PORTS["managesieve"])
    http: Listen = Listen("0.0.0.0", DEFAULT_PORTS["proxy_http"])
    max_connections: int = 5000
    max_connections_per_client: int = 50
    connect_timeout_seconds: int = 10
    login_timeout_seconds: int = 180  # to log in, from connecting
    idle_timeout_seconds: int = 1800  # no byte either way (IMAP IDLE re-issues within 29 min)


@dataclass(frozen=True)
class ClientPorts:
    """The ports mail clients connect to, as autoconfiguration documents name them."""

    submission: int = 587
    smtps: int = 465
    imap: int = 143
    imaps: int = 993
    pop3: int = 110
    pop3s: int = 995


@dataclass(frozen=True)
class AutoconfigConfig:
    """``correo serve autoconfig``: client autoconfiguration and the MTA-STS policy over HTTP."""

    listen: Listen = Listen("0.0.0.0", DEFAULT_PORTS["autoconfig"])  # the documents (behind an Ingress)
    http: Listen = Listen("0.0.0.0", DEFAULT_PORTS["autoconfig_http"])  # /healthz, /readyz, /metrics, /status
    # The host name clients connect to; empty: each domain's hostname.
    client_host: str = ""
    client_ports: ClientPorts = ClientPorts()


@dataclass(frozen=True)
class ServerConfig:
    """The whole of ``correo.yaml``."""

    name: str  # the stack's name (the MailDomain's metadata.name)
    hostname: str  # banner, HELO, Received:, MAILER-DAEMON@hostname
    domains: tuple[Domain, ...] = ()
    tls: TLSFiles | None = None
    auth: AuthSettings = AuthSettings()
    relay: RelayConfig = RelayConfig()
    queue: QueueConfig = QueueConfig()
    mailstore: MailstoreConfig = MailstoreConfig()
    autoconfig: AutoconfigConfig = AutoconfigConfig()
    proxy: ProxyConfig | None = None  # present when the mailstore has shards
    log_format: str = "json"  # "json" or "console"
    # DNS for the relay's defences (SPF, DKIM, DMARC, DNSBL), "host:port"
    # each; empty: the system's resolver.  (The queue reads queue.nameservers.)
    nameservers: tuple[str, ...] = ()
    version: int = FORMAT_VERSION
    # Where the file was read from; relative paths resolve against it.
    base_dir: str = field(default=".", compare=False)

    # -- lookups shared by the servers ------------------------------------
    def domain_for(self, name: str) -> Domain | None:
        """The hosted Domain a domain name (canonical or alias) belongs to."""
        name = name.lower().rstrip(".")
        for domain in self.domains:
            if name in domain.all_names:
                return domain
        return None

    def is_hosted(self, name: str) -> bool:
        return self.domain_for(name) is not None

    def canonical_address(self, address: str) -> str:
        """Map ``user@alias-domain`` onto ``user@domain``; other addresses unchanged
        except that the domain part is lower-cased."""
        local, at, dom = address.rpartition("@")
        if not at:
            return address
        domain = self.domain_for(dom)
        return f"{local}@{(domain.name if domain else dom.lower())}"

    def path(self, value: str) -> Path:
        """A path from the file, resolved against the configuration folder."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


# ---------------------------------------------------------------------------
# Reading and writing.  The YAML uses camelCase keys (like the CRDs); the
# dataclasses use snake_case; conversion is mechanical and strict.
# ---------------------------------------------------------------------------

def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def to_dict(obj: Any) -> Any:
    """Plain data (camelCase keys) for YAML; fields equal to None are left out."""
    if isinstance(obj, Listen):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name == "base_dir":
                continue
            value = getattr(obj, f.name)
            if value is None:
                continue
            out[_camel(f.name)] = to_dict(value)
        return out
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if tp is Listen:
        try:
            return Listen.parse(value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {_camel(f.name): f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for key, f in fields.items():
        if key in data:
            kwargs[f.name] = _convert(hints[f.name], data[key], f"{where}.{key}" if where else key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {key}")
    return cls(**kwargs)


def parse(text: str, *, source: str = CONFIG_FILE, base_dir: str = ".") -> ServerConfig:
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top")
    try:
        cfg = _from_dict(ServerConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).lstrip(': ')}") from None
    if cfg.version != FORMAT_VERSION:
        raise ConfigError(f"{source}: version {cfg.version} is not supported (expected {FORMAT_VERSION})")
    problems = validate(cfg)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return dataclasses.replace(cfg, base_dir=base_dir)


def validate(cfg: ServerConfig) -> list[str]:
    """Semantic checks the types cannot express."""
    problems = []
    if cfg.auth.plaintext not in ("loopback", "always", "never"):
        problems.append(f"auth.plaintext: must be loopback, always or never, not {cfg.auth.plaintext!r}")
    if cfg.auth.login_cache_seconds < 0 or cfg.auth.login_cache_entries < 0:
        problems.append("auth.loginCacheSeconds and auth.loginCacheEntries: must not be negative (0 turns the "
                        "login cache off)")
    if cfg.mailstore.over_quota not in ("reject", "defer"):
        problems.append(f"mailstore.overQuota: must be reject or defer, not {cfg.mailstore.over_quota!r}")
    if cfg.log_format not in ("json", "console"):
        problems.append(f"logFormat: must be json or console, not {cfg.log_format!r}")
    for i, d in enumerate(cfg.domains):
        r = d.retry
        if r.give_up_after_seconds <= r.warn_after_seconds:
            problems.append(f"domains[{i}].retry: giveUpAfterSeconds must be greater than warnAfterSeconds")
        if any(ch in d.recipient_delimiter for ch in "@\"\\ \t\r\n"):
            problems.append(f"domains[{i}].recipientDelimiter: {d.recipient_delimiter!r} may not hold @, quotes, "
                            "backslashes or spaces")
        if d.catch_all is not None and d.catch_all.rpartition("@")[2].lower() not in d.all_names:
            problems.append(f"domains[{i}].catchAll: {d.catch_all} is not an address of {d.name}")
        if d.mta_sts and d.mta_sts.mode not in ("none", "testing", "enforce"):
            problems.append(f"domains[{i}].mtaSts.mode: must be none, testing or enforce, not {d.mta_sts.mode!r}")
        if d.mta_sts and not 0 < d.mta_sts.max_age_seconds <= 31557600:
            problems.append(f"domains[{i}].mtaSts.maxAgeSeconds: must be between 1 and 31557600 (RFC 8461)")
        if d.smarthost and d.smarthost.tls not in ("starttls", "implicit", "opportunistic", "none"):
            problems.append(f"domains[{i}].smarthost.tls: must be starttls, implicit, opportunistic or none")
    if cfg.mailstore.shard is not None and not 0 <= cfg.mailstore.shard < max(len(cfg.mailstore.shards), 1):
        problems.append(f"mailstore.shard: {cfg.mailstore.shard} is not one of the {len(cfg.mailstore.shards)} shards")
    problems += validate_filter(cfg.relay.filter)
    names = [n for d in cfg.domains for n in d.all_names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"domains: {', '.join(dupes)} listed more than once")
    return problems


def validate_filter(flt: FilterConfig | None) -> list[str]:
    """What the types of ``relay.filter`` cannot say."""
    problems: list[str] = []
    if flt is None:
        return problems
    where = "relay.filter"
    rs = flt.rspamd
    if rs is not None:
        if not rs.url.startswith(("http://", "https://")):
            problems.append(f"{where}.rspamd.url: must be an http:// or https:// URL, not {rs.url!r}")
        if rs.on_failure not in ("tempfail", "accept"):
            problems.append(f"{where}.rspamd.onFailure: must be tempfail or accept, not {rs.on_failure!r}")
        if not 0 < rs.timeout_seconds <= 600:
            problems.append(f"{where}.rspamd.timeoutSeconds: must be more than 0 and at most 600")
    for i, zone in enumerate(flt.dnsbl.zones):
        if zone.action not in ("reject", "score", "allow"):
            problems.append(f"{where}.dnsbl.zones[{i}].action: must be reject, score or allow, not {zone.action!r}")
        for j, code in enumerate(zone.return_codes):
            try:
                ipaddress.ip_network(code, strict=False)
            except ValueError:
                problems.append(f"{where}.dnsbl.zones[{i}].returnCodes[{j}]: {code!r} is not an address or network")
    if flt.dnsbl.threshold < 0 or flt.dnsbl.cache_seconds < 0:
        problems.append(f"{where}.dnsbl: threshold and cacheSeconds cannot be negative")
    return problems


def dump(cfg: ServerConfig) -> str:
    """The YAML text of a configuration; deterministic (same config, same bytes)."""
    return yaml_dump(to_dict(cfg))


def load(config_dir: str | os.PathLike[str]) -> ServerConfig:
    """Read ``DIR/correo.yaml``."""
    path = Path(config_dir) / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (is --config the folder holding {CONFIG_FILE}?)") from None
    return parse(text, source=str(path), base_dir=str(Path(config_dir)))
