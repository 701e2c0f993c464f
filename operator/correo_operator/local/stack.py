"""Loaded resources → the local configuration folder.

The configuration is made by the operator's renderer: each MailDomain's
``render.server_config`` (the same function that fills the ConfigMap) and
``render.directory_entries`` (the directory Secret); this module only moves
listeners and paths onto this machine.  Several MailDomains run as one local
stack: their domain entries are listed together (the servers are
multi-domain), relay limits are the largest of them; the relay's filter is
the first MailDomain's (a managed rspamd is a local process, ``rspamd``).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import random
import socket
from dataclasses import dataclass
from pathlib import Path

from correo_server import config as cfgmod
from correo_server import directory as dirmod

from .. import loading, placement, render, secretdata
from correo_server.srs import generate_key

from . import keys
from . import rspamd as localrspamd
from .layout import Layout, read_json, write_atomic, write_json

PUBLIC = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "managesieve", "autoconfig")
INTERNAL = ("queue_lmtp", "queue_http", "mailstore_lmtp", "mailstore_http", "relay_http", "autoconfig_http",
            *localrspamd.PORTS)


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port_base: int = 0  # offset added to every default public port
    ephemeral: bool = False  # pick free ports for everything (tests)
    dns: tuple[str, ...] = ()
    remote_smtp_port: int | None = None


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, chosen below the kernel's ephemeral range.

    The port is bound later by a child process. A port the kernel hands out
    for ``bind(0)`` is one it also hands out as the source port of outgoing
    connections and to every other ``bind(0)`` on the machine, so between
    this choice and the child's bind another process could take it (seen on
    busy machines as "address already in use" at start). Below the range only
    an explicit bind can take it."""
    low, _high = _ephemeral_range()
    first = 10000 if low > 11000 else 1024
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(64):
        port = random.randrange(first, low)
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family) as s:  # the low range is full: take what the kernel gives
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


SHARD_PORTS = ("lmtp", "imap", "pop3", "managesieve", "http", "moves")


def shard_count(loaded: loading.Loaded) -> int:
    """How many mailstore shards the local stack runs: the most any MailDomain asks."""
    return max((d.spec.mailstore.shards for d in loaded.maildomains()), default=1)


def queue_count(loaded: loading.Loaded) -> int:
    """How many queue replicas the local stack runs: the most any MailDomain asks."""
    return max((d.spec.queue.replicas for d in loaded.maildomains()), default=1)


def queue_port(ports: dict[str, int], replica: int, kind: str) -> int:
    """The ``lmtp`` or ``http`` port of queue replica ``replica``: replica 0
    has the queue's own (``queue_lmtp``, ``queue_http``), the others theirs."""
    return ports[f"queue_{kind}"] if replica == 0 else ports[f"queue{replica}_{kind}"]


def internal_names(shards: int, queues: int = 1) -> tuple[str, ...]:
    """The internal ports of a stack with ``shards`` mailstore shards (more
    than one: each shard's own, and the proxy's side port) and ``queues``
    queue replicas (replica 0 has the queue's ports, the others their own)."""
    names = INTERNAL + tuple(f"queue{i}_{p}" for i in range(1, queues) for p in ("lmtp", "http"))
    if shards <= 1:
        return names
    return names + ("proxy_http",) + tuple(f"mailstore{i}_{p}" for i in range(shards) for p in SHARD_PORTS)


def choose_ports(options: Options, previous: dict[str, int] | None = None, shards: int = 1,
                 queues: int = 1) -> dict[str, int]:
    """Public ports: the documented defaults moved by ``port_base`` (or free
    ones); internal ports: free ones (kept from ``previous`` when possible)."""
    ports: dict[str, int] = {}
    for name in PUBLIC:
        if not options.ephemeral:
            ports[name] = cfgmod.DEFAULT_PORTS[name] + options.port_base
            continue
        port = free_port(options.host)
        while port in ports.values():  # free now, and not chosen for another listener
            port = free_port(options.host)
        ports[name] = port
    for name in internal_names(shards, queues):
        old = (previous or {}).get(name)
        port = old if old and not port_in_use("127.0.0.1", old) and old not in ports.values() else None
        while port is None or port in ports.values():  # free now, and not chosen for another listener
            port = free_port("127.0.0.1")
        ports[name] = port
    return ports


def busy_public_ports(options: Options, ports: dict[str, int]) -> list[int]:
    return [ports[name] for name in PUBLIC if port_in_use(options.host, ports[name])]


def _l(host: str, port: int) -> cfgmod.Listen:
    return cfgmod.Listen(host, port)


def server_config(loaded: loading.Loaded, layout: Layout, ports: dict[str, int], options: Options,
                  *, tls: bool) -> cfgmod.ServerConfig:
    per_domain = [render.server_config(d) for d in loaded.maildomains()]
    first = per_domain[0]
    h = options.host
    relay = dataclasses.replace(
        first.relay,
        smtp=_l(h, ports["smtp"]), submission=_l(h, ports["submission"]), smtps=_l(h, ports["smtps"]),
        http=_l("127.0.0.1", ports["relay_http"]), queue=_l("127.0.0.1", ports["queue_lmtp"]),
        max_message_bytes=max(c.relay.max_message_bytes for c in per_domain),
        max_recipients=max(c.relay.max_recipients for c in per_domain),
        rate_limit_messages=max(c.relay.rate_limit_messages for c in per_domain),
        rate_limit_period_seconds=min(c.relay.rate_limit_period_seconds for c in per_domain),
        filter=localrspamd.localize(first.relay.filter, managed=localrspamd.wanted(loaded), ports=ports),
        mailstore_http=_l("127.0.0.1", ports["mailstore_http"]), queue_http=_l("127.0.0.1", ports["queue_http"]),
    )
    queue = dataclasses.replace(
        first.queue,
        lmtp=_l("127.0.0.1", ports["queue_lmtp"]), http=_l("127.0.0.1", ports["queue_http"]),
        mailstore=_l("127.0.0.1", ports["mailstore_lmtp"]), spool_dir=str(layout.spool),
        max_message_bytes=relay.max_message_bytes, nameservers=tuple(options.dns),
        remote_smtp_port=options.remote_smtp_port or first.queue.remote_smtp_port,
    )
    mailstore = dataclasses.replace(
        first.mailstore,
        imap=_l(h, ports["imap"]), imaps=_l(h, ports["imaps"]), pop3=_l(h, ports["pop3"]),
        pop3s=_l(h, ports["pop3s"]), managesieve=_l(h, ports["managesieve"]),
        lmtp=_l("127.0.0.1", ports["mailstore_lmtp"]), queue=_l("127.0.0.1", ports["queue_lmtp"]),
        http=_l("127.0.0.1", ports["mailstore_http"]), data_dir=str(layout.mail),
        imap_enabled=any(c.mailstore.imap_enabled for c in per_domain),
        pop3_enabled=any(c.mailstore.pop3_enabled for c in per_domain),
        managesieve_enabled=any(c.mailstore.managesieve_enabled for c in per_domain),
        max_literal_bytes=max(c.mailstore.max_literal_bytes for c in per_domain),
    )
    autoconfig = cfgmod.AutoconfigConfig(
        listen=_l(h, ports["autoconfig"]), http=_l("127.0.0.1", ports["autoconfig_http"]),
        # Clients of the local stack connect to its listeners, not to the domains' hostnames.
        client_host=h if h not in ("0.0.0.0", "::") else "",
        client_ports=cfgmod.ClientPorts(**{name: ports[name] for name in
                                           ("submission", "smtps", "imap", "imaps", "pop3", "pop3s")}),
    )
    queues = queue_count(loaded)
    if queues > 1:  # N queue processes on loopback, each its own spool; the relay hands mail to any of them
        loop = "127.0.0.1"
        queue = dataclasses.replace(queue, replicas=tuple(
            cfgmod.QueueReplica(host=loop, listen=loop, lmtp=queue_port(ports, i, "lmtp"),
                                http=queue_port(ports, i, "http"), spool_dir=str(layout.replica_spool(i)))
            for i in range(queues)))
    proxy = None
    shards = shard_count(loaded)
    if shards > 1:  # N shard processes on loopback, the proxy on the public ports
        loop = "127.0.0.1"
        mailstore = dataclasses.replace(
            mailstore,
            shards=tuple(cfgmod.MailstoreShard(host=loop, listen=loop, data_dir=str(layout.shard_mail(i)),
                                               **{p: ports[f"mailstore{i}_{p}"] for p in SHARD_PORTS})
                         for i in range(shards)),
            proxy_secret_file=render.PROXY_SECRET_FILE)
        proxy = cfgmod.ProxyConfig(imap=_l(h, ports["imap"]), imaps=_l(h, ports["imaps"]), pop3=_l(h, ports["pop3"]),
                                   pop3s=_l(h, ports["pop3s"]), managesieve=_l(h, ports["managesieve"]),
                                   http=_l(loop, ports["proxy_http"]))
    return dataclasses.replace(
        first,
        name="local",
        domains=tuple(dom for c in per_domain for dom in c.domains),
        tls=cfgmod.TLSFiles() if tls else None,
        relay=relay, queue=queue, mailstore=mailstore, autoconfig=autoconfig, proxy=proxy,
        log_format="console", nameservers=tuple(options.dns),
    )


def directory_entries(loaded: loading.Loaded, previous_shards: dict[str, int] | None = None
                      ) -> list[dirmod.MailboxEntry]:
    """``previous_shards``: the shards the running directory records
    (``placement``: adding shards moves no mailbox)."""
    entries: list[dirmod.MailboxEntry] = []
    for d in loaded.maildomains():
        entries += render.directory_entries(d, loaded.mailboxes_of(d), loaded.secrets_in(d.namespace),
                                            previous_shards=previous_shards)
    return entries


def previous_shards(layout: Layout) -> dict[str, int]:
    try:
        text = (layout.config / cfgmod.DIRECTORY_FILE).read_text(encoding="utf-8")
    except OSError:
        return {}
    return placement.shards_in_directory(text)


def _tls_from_secret(loaded: loading.Loaded) -> tuple[str, str] | None:
    """The first MailDomain's TLS Secret, when the files include it."""
    for d in loaded.maildomains():
        name = d.tls_secret
        secret = loaded.secrets.get((d.namespace, name)) if name else None
        if secret is not None:
            crt, key = secretdata.secret_value(secret.obj, "tls.crt"), secretdata.secret_value(secret.obj, "tls.key")
            if crt and key:
                return crt, key
    return None


def write_keys(loaded: loading.Loaded, layout: Layout, cfg: cfgmod.ServerConfig) -> dict[str, str]:
    """TLS pair (from a Secret in the files, else self-signed for every
    hostname), DKIM keys (made once), smarthost credentials.  Returns the DKIM
    public keys by domain name."""
    tls_dir = layout.config / "tls"
    given = _tls_from_secret(loaded)
    if given:
        write_atomic(tls_dir / "tls.crt", given[0], 0o644)
        write_atomic(tls_dir / "tls.key", given[1], 0o600)
    else:
        hostnames = sorted({d.hostname for d in cfg.domains if d.hostname} or {cfg.hostname})
        hostnames.sort(key=lambda h: h != cfg.hostname)
        host = cfg.relay.smtp.host
        ips = (host,) if _is_ip(host) and host not in ("0.0.0.0", "::") else ()
        if not set(hostnames) | set(ips) <= keys.certificate_names(tls_dir / "tls.crt"):
            keys.self_signed(tls_dir / "tls.crt", tls_dir / "tls.key", hostnames, ips=ips)
    public: dict[str, str] = {}
    for dom in cfg.domains:
        if dom.dkim_key_file:
            public[dom.name] = keys.ensure_dkim_key(cfg.path(dom.dkim_key_file))
        if dom.srs_key_file and not cfg.path(dom.srs_key_file).exists():  # made once: bounces stay valid
            write_atomic(cfg.path(dom.srs_key_file), generate_key() + "\n", 0o600)
    first = loaded.maildomains()[0] if loaded.maildomains() else None
    ref = first.rspamd_password if first is not None and not first.managed_rspamd else None
    secret = loaded.secrets.get((first.namespace, ref.name)) if ref is not None else None
    value = secretdata.secret_value(secret.obj, ref.key) if secret is not None else None
    if value is not None:
        write_atomic(layout.config / "rspamd" / "password", value, 0o600)
    for d in loaded.maildomains():
        cred = d.smarthost_credentials
        secret = loaded.secrets.get((d.namespace, cred.name)) if cred else None
        if secret is not None:
            for key, path in ((cred.username_key, "username"), (cred.password_key, "password")):
                value = secretdata.secret_value(secret.obj, key)
                if value is not None:
                    write_atomic(layout.config / "smarthost" / path, value, 0o600)
    return public


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def write_config(loaded: loading.Loaded, layout: Layout, ports: dict[str, int], options: Options) -> tuple[bool, bool]:
    """Write the whole configuration folder.  Returns (correo.yaml changed,
    directory.yaml changed): the first needs a restart of the services, the
    second does not (they reload the directory by themselves)."""
    layout.create()
    cfg = server_config(loaded, layout, ports, options, tls=True)
    cfg = dataclasses.replace(cfg, base_dir=str(layout.config))
    write_keys(loaded, layout, cfg)
    if cfg.mailstore.proxy_secret_file:
        keys.ensure_secret(cfg.path(cfg.mailstore.proxy_secret_file))
    if localrspamd.wanted(loaded) and localrspamd.available():
        localrspamd.write_config(layout, ports, tuple(options.dns))
    write_applied(loaded, layout)
    config_changed = write_atomic(layout.config / cfgmod.CONFIG_FILE, cfgmod.dump(cfg), 0o600)
    directory_changed = write_atomic(layout.config / cfgmod.DIRECTORY_FILE,
                                     dirmod.dump(directory_entries(loaded, previous_shards(layout))), 0o600)
    return config_changed, directory_changed


def write_applied(loaded: loading.Loaded, layout: Layout) -> None:
    """What runs, for ``correo status``: the resources (with defaults) and the
    usable keys of their Secrets, never the Secrets' values.  Status reads this,
    not the YAML on disk, which may be mid-edit or broken."""
    resources = [d.obj for d in sorted(loaded.domains + loaded.mailboxes, key=lambda d: (d.kind, d.namespace, d.name))]
    keys = {f"{ns}/{name}": sorted(secretdata.usable_keys(doc.obj)) for (ns, name), doc in sorted(loaded.secrets.items())}
    write_json(layout.applied_file, {"resources": resources, "secretKeys": keys})


def read_applied(layout: Layout) -> tuple[loading.Loaded, dict[str, dict[str, frozenset[str]]]] | None:
    """The resources of :func:`write_applied` as a ``Loaded``, and the usable
    Secret keys by namespace and name."""
    doc = read_json(layout.applied_file)
    if doc is None:
        return None
    loaded = loading.Loaded()
    for i, obj in enumerate(doc.get("resources") or [], start=1):
        d = loading.document(obj, str(layout.applied_file), i)
        (loaded.domains if d.kind == "MailDomain" else loaded.mailboxes).append(d)
    keys: dict[str, dict[str, frozenset[str]]] = {}
    for ref, names in (doc.get("secretKeys") or {}).items():
        ns, _, name = ref.partition("/")
        keys.setdefault(ns, {})[name] = frozenset(names)
    return loaded, keys


def dkim_public_keys(layout: Layout) -> dict[str, str]:
    """Public DKIM keys of the domains in the written configuration."""
    try:
        cfg = cfgmod.load(layout.config)
    except cfgmod.ConfigError:
        return {}
    out = {}
    for dom in cfg.domains:
        if dom.dkim_key_file:
            key = keys.dkim_public_key(cfg.path(dom.dkim_key_file))
            if key:
                out[dom.name] = key
    return out


def file_signature(paths: list[str]) -> tuple:
    """Changes when any YAML file under ``paths`` is added, removed or edited."""
    sig = []
    for raw in paths:
        p = Path(raw)
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.suffix in (".yaml", ".yml"):
                try:
                    st = f.stat()
                except OSError:
                    continue
                sig.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(sig)
