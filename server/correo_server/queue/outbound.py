"""Routing and delivery: which next hop a recipient goes to, and handing one
message to it.

Three kinds of next hop (a :class:`Route`):

- ``mailstore``: recipients of hosted domains, over LMTP to ``queue.mailstore``;
  the mailstore answers for each recipient after DATA (RFC 2033).  Each
  recipient carries its delivery key (``XDELIVERY-KEY``,
  :mod:`correo_server.deliverykeys`), so that a delivery repeated after a
  lost reply is not stored twice.  With mailstore shards
  (:mod:`correo_server.shards`) each shard is a route of its own
  (``mailstore:N``, the shard the directory records for the mailbox): one
  LMTP transaction per shard, and a shard that is down defers only its
  recipients.
- ``smarthost``: everything non-hosted of a domain that names one
  (``Domain.smarthost``): its TLS mode (``starttls`` required, ``implicit``,
  ``opportunistic``, ``none``) and AUTH with the username/password files.
- ``mx``: the recipient domain's MX hosts (:mod:`.mx`) on
  ``queue.remoteSmtpPort``, tried in preference order; a host that refuses the
  connection, or answers 4xx, passes the still-undelivered recipients on to the
  next one.  STARTTLS is used whenever offered (opportunistic, RFC 7435); when
  the handshake fails the same host is tried again without TLS.  A domain
  with an MTA-STS policy (RFC 8461, :mod:`correo_server.mtasts`) gets what
  its policy asks per MX host: only hosts it lists, TLS with a certificate
  valid for the host's name (``enforce``: else the next host, or a deferral
  saying why; ``testing``: logged, delivered anyway).

Mail that leaves for another domain with a sender that is not ours (a
``forwardTo``, a Sieve redirect, a bounce reversed by the relay) carries an
SRS sender at the domain it belongs to (:func:`correo_server.srs.forward_sender`),
so that SPF passes where it goes; bounces come back to that address, and
the relay routes them to the real sender.

A :class:`Session` belongs to one delivery worker and one route, and keeps its
connection open between messages (connection reuse).  It returns one
:class:`Result` per recipient; :mod:`.runner` turns results into state.
"""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .. import deliverykeys, logs, shards, tlsfiles
from ..config import ServerConfig, Smarthost
from ..mtasts.decide import HostRule
from ..mtasts.policies import Policies
from ..srs import SrsDomains, forward_sender
from .mx import MXResolver
from .ownership import owner_of
from .records import Envelope, Rcpt
from ..wire.client import Connection, Failure
from ..wire.data import crlf_message, dot_stuff, wire_data
from ..wire.replies import Reply, local_reply

log = logs.get(__name__)


@dataclass(frozen=True)
class Route:
    key: str  # groups work: "mailstore", "mx:example.org", "smarthost:relay.example:587"
    kind: str  # "mailstore" | "mx" | "smarthost"
    domain: str = ""
    smarthost: Smarthost | None = None
    shard: int | None = None  # the mailstore shard (None: the one mailstore)


MAILSTORE = Route("mailstore", "mailstore")
_SHARD_ROUTES: dict[int, Route] = {}


def shard_route(shard: int) -> Route:
    route = _SHARD_ROUTES.get(shard)
    if route is None:
        route = _SHARD_ROUTES[shard] = Route(f"mailstore:{shard}", "mailstore", shard=shard)
    return route


def route_for(cfg: ServerConfig, env: Envelope, rcpt: Rcpt,
              shard_of: Callable[[str], int] | None = None) -> Route:
    """``shard_of(address)``: the mailstore shard of a local recipient, when
    there are shards."""
    if rcpt.local:
        return MAILSTORE if shard_of is None else shard_route(shard_of(rcpt.address))
    owner = owner_of(cfg, env)
    if owner is not None and owner.smarthost is not None:
        sh = owner.smarthost
        return Route(f"smarthost:{sh.host}:{sh.port}", "smarthost", smarthost=sh)
    domain = rcpt.address.rpartition("@")[2].lower().rstrip(".")
    return Route(f"mx:{domain}", "mx", domain=domain)


@dataclass(frozen=True)
class Result:
    index: int  # the recipient's index in the envelope
    reply: Reply
    server: str  # "mx1.example.org[192.0.2.1]:25"
    destination: str  # what /status names: MX host, "host:port" of a smarthost, "mailstore"
    remote_mta: str = ""  # the host name that gave the reply (for DSN Remote-MTA)


@dataclass(frozen=True)
class Settings:
    hostname: str  # EHLO name
    mailstore_host: str
    mailstore_port: int
    remote_port: int
    connect_timeout: float
    timeout: float
    config: ServerConfig
    mta_sts: Policies | None = None  # receivers' MTA-STS policies (None: not honoured)
    srs: SrsDomains | None = None  # the sender of mail passed on elsewhere is rewritten (srs.forward_sender)

    @classmethod
    def from_config(cls, cfg: ServerConfig, clock=None) -> "Settings":
        q = cfg.queue
        host = q.mailstore.host if q.mailstore.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return cls(cfg.hostname, host, q.mailstore.port, q.remote_smtp_port, float(q.connect_timeout_seconds),
                   float(q.command_timeout_seconds), cfg,
                   Policies.from_config(cfg, **({"now": clock.now} if clock is not None else {})),
                   SrsDomains.from_config(cfg, on_error=lambda domain, exc: log.error(
                       "srs_keys_unreadable", domain=domain, error=str(exc))) or None)


class Session:
    """A worker's link to one route; ``deliver`` one message after another."""

    def __init__(self, route: Route, settings: Settings, resolver: MXResolver) -> None:
        self.route = route
        self.settings = settings
        self.resolver = resolver
        self.conn: Connection | None = None
        self._conn_name = ""  # host name of the current connection
        self._tls_context: ssl.SSLContext | None = None

    def _client_tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = tlsfiles.client_context()
        return self._tls_context

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.quit()
            self.conn = None

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.abort()
            self.conn = None

    async def deliver(self, env: Envelope, data: bytes, rcpts: Sequence[tuple[int, Rcpt]]) -> list[Result]:
        body8 = env.body == "8BITMIME" or not data.isascii()
        if self.route.kind == "mailstore":
            host, port = self._mailstore_target()
            name = "mailstore" if self.route.shard is None else f"mailstore-{self.route.shard}"
            content = crlf_message(data)  # as the mailstore gets it, in a BDAT chunk or (dots added) after DATA
            return await self._deliver_simple(env, dot_stuff(content) + b".\r\n", body8, rcpts,
                                              self._open_mailstore, name, f"{name}[{host}]:{port}", content)
        payload = wire_data(data)
        if self.route.kind == "smarthost":
            sh = self.route.smarthost
            assert sh is not None
            return await self._deliver_simple(env, payload, body8, rcpts, self._open_smarthost,
                                              f"{sh.host}:{sh.port}", f"{sh.host}:{sh.port}")
        return await self._deliver_mx(env, payload, body8, rcpts)

    # -- one transaction on the current connection -------------------------
    async def _transact(self, conn: Connection, env: Envelope, payload: bytes, body8: bool,
                        rcpts: Sequence[tuple[int, Rcpt]], content: bytes | None = None) -> list[Reply]:
        """``content``: the message without dots, for BDAT (the mailstore)."""
        keys = None
        if conn.lmtp and deliverykeys.EXTENSION in conn.extensions:  # the mailstore: exactly once
            base = env.key or env.id
            keys = [f"{deliverykeys.EXTENSION}={deliverykeys.delivery_key(base, r.address)}" for _, r in rcpts]
        else:
            content = None  # BDAT sends the message before the recipients are accepted: only where repeats are kept once
        sender = env.sender if self.route.kind == "mailstore" else \
            forward_sender(self.settings.srs, env.sender, env.domain, self.settings.config.is_hosted)
        outcome = await conn.transaction(sender, [r.address for _, r in rcpts], payload, size=len(payload),
                                         smtputf8=env.smtputf8, body8=body8, ident=env.id, rcpt_params=keys,
                                         content=content)
        return outcome.replies

    async def _deliver_simple(self, env, payload, body8, rcpts, opener, destination: str,
                              where: str, content: bytes | None = None) -> list[Result]:
        """Mailstore and smarthost: one place to go; a reused connection that
        turns out dead is replaced once."""
        for fresh in (False, True):
            reused = self.conn is not None and not fresh
            if fresh or self.conn is None:
                self._drop()
                try:
                    self.conn = await opener()
                except Failure as exc:
                    return [Result(i, exc.reply, where, destination) for i, _ in rcpts]
            conn = self.conn
            assert conn is not None
            mta = conn.host if self.route.kind != "mailstore" else ""
            try:
                replies = await self._transact(conn, env, payload, body8, rcpts, content)
            except Failure as exc:
                self._drop()
                if reused and not conn.payload_sent:
                    continue  # the server closed an idle connection: try once more on a new one
                return [Result(i, exc.reply, conn.server, destination, mta) for i, _ in rcpts]
            if reused and all(r.code == 421 for r in replies):
                self._drop()
                continue
            if any(r.code == 421 for r in replies):
                self._drop()  # the server is closing the connection
            return [Result(i, reply, conn.server, destination, mta) for (i, _), reply in zip(rcpts, replies)]
        raise AssertionError("unreachable")

    async def _greet(self, conn: Connection, *, lmtp: bool = False) -> Reply:
        if conn.greeting is None or not conn.greeting.ok:
            reply = conn.greeting or local_reply(451, "4.4.2", "no greeting")
            await conn.quit()
            raise Failure(reply)
        reply = await conn.hello(self.settings.hostname, lmtp=lmtp)
        if not reply.ok:
            await conn.quit()
            raise Failure(reply)
        return reply

    def _mailstore_target(self) -> tuple[str, int]:
        s = self.settings
        if self.route.shard is None:
            return s.mailstore_host, s.mailstore_port
        return shards.lmtp_target(s.config, self.route.shard)

    async def _open_mailstore(self) -> Connection:
        s = self.settings
        host, port = self._mailstore_target()
        conn = await Connection.open("mailstore", host, port, connect_timeout=s.connect_timeout, timeout=s.timeout)
        await self._greet(conn, lmtp=True)
        return conn

    def _secret(self, name: str | None) -> str | None:
        if not name:
            return None
        return Path(self.settings.config.path(name)).read_text(encoding="utf-8").strip("\r\n")

    async def _open_smarthost(self) -> Connection:
        sh = self.route.smarthost
        assert sh is not None
        s = self.settings
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(sh.host, sh.port, type=1)
            addr = infos[0][4][0]
        except OSError as exc:
            raise Failure(local_reply(451, "4.4.3", f"cannot resolve smarthost {sh.host}: {exc}")) from None
        implicit = sh.tls == "implicit"
        conn = await Connection.open(sh.host, addr, sh.port, connect_timeout=s.connect_timeout, timeout=s.timeout,
                                     tls=self._client_tls() if implicit else None)
        await self._greet(conn)
        if not implicit and sh.tls in ("starttls", "opportunistic") and "STARTTLS" in conn.extensions:
            reply = await conn.starttls(self._client_tls(), s.hostname, sh.host)
            if not reply.ok:
                await conn.quit()
                raise Failure(reply if reply.code != 220 else local_reply(451, "4.7.5", "STARTTLS failed"))
        if sh.tls == "starttls" and not conn.tls:
            await conn.quit()
            raise Failure(local_reply(451, "4.7.4", f"smarthost {sh.host}:{sh.port} does not offer STARTTLS, "
                                                     "which the configuration requires"))
        try:
            username, password = self._secret(sh.username_file), self._secret(sh.password_file)
        except OSError as exc:
            await conn.quit()
            raise Failure(local_reply(451, "4.7.0", f"cannot read smarthost credentials: {exc.strerror}")) from None
        if username is not None and password is not None:
            reply = await conn.auth(username, password)
            if not reply.ok:
                await conn.quit()
                # A rejected login is a configuration problem: keep the mail and retry.
                raise Failure(local_reply(451, "4.7.0", f"authentication at smarthost {sh.host} failed: {reply}"))
        return conn

    # -- MX ------------------------------------------------------------------
    async def _open_mx(self, host: str, addr: str, rule: HostRule | None = None) -> Connection:
        """Connect, EHLO, STARTTLS when offered (plain again if the handshake fails);
        with an MTA-STS ``rule``, STARTTLS with the certificate checked."""
        s = self.settings
        conn = await Connection.open(host, addr, s.remote_port, connect_timeout=s.connect_timeout, timeout=s.timeout)
        await self._greet(conn)
        if "STARTTLS" not in conn.extensions:
            if rule is not None and (fail := rule.unmet("it does not offer STARTTLS", "4.7.4")) is not None:
                await conn.quit()
                raise fail
            return conn
        try:
            reply = await conn.starttls(rule.context if rule else self._client_tls(), s.hostname, host)
        except Failure as exc:
            if rule is not None:
                if (fail := rule.unmet(f"TLS failed: {exc.reply.text.partition(' failed: ')[2]}")) is not None:
                    raise fail from None
                return await self._open_mx(host, addr)  # testing: as if there were no policy
            log.info("starttls_failed_retrying_plain", server=conn.server, error=str(exc.reply))
            conn = await Connection.open(host, addr, s.remote_port, connect_timeout=s.connect_timeout,
                                         timeout=s.timeout)
            await self._greet(conn)
            return conn
        if not reply.ok:  # STARTTLS refused (or EHLO after it): carry on in plain text on a new connection
            await conn.quit()
            if rule is not None and (fail := rule.unmet(f"STARTTLS was refused: {reply}", "4.7.4")) is not None:
                raise fail
            conn = await Connection.open(host, addr, s.remote_port, connect_timeout=s.connect_timeout,
                                         timeout=s.timeout)
            await self._greet(conn)
        return conn

    async def _deliver_mx(self, env, payload, body8, rcpts) -> list[Result]:
        domain = self.route.domain
        results: dict[int, Result] = {}
        remaining = list(rcpts)

        def record(batch, replies, server, dest, mta) -> None:
            nonlocal remaining
            still = []
            for (i, r), reply in zip(batch, replies):
                results[i] = Result(i, reply, server, dest, mta)
                if reply.temporary:
                    still.append((i, r))
            remaining = still

        # A connection kept from the previous message first.
        if self.conn is not None:
            conn = self.conn
            try:
                replies = await self._transact(conn, env, payload, body8, remaining)
            except Failure as exc:
                self._drop()
                if conn.payload_sent:  # it may have arrived: no second copy now, a retry later
                    return [Result(i, exc.reply, conn.server, conn.host, conn.host) for i, _ in rcpts]
            else:
                if all(r.code == 421 for r in replies):
                    self._drop()
                else:
                    record(remaining, replies, conn.server, conn.host, conn.host)
                    if any(r.code == 421 for r in replies) or remaining:
                        self._drop()
                    if not remaining:
                        return [results[i] for i, _ in rcpts]
        try:
            hosts = await self.resolver.hosts(domain)
        except Failure as exc:
            for i, _ in remaining:
                results[i] = Result(i, exc.reply, f"dns:{domain}", domain, "")
            return [results[i] for i, _ in rcpts]
        policies = self.settings.mta_sts
        applied = await policies.policy_for(domain, self.resolver.resolver) if policies else None
        for host in hosts:
            rule = policies.rule(applied, host.name) if policies else None
            if rule is not None and (refusal := rule.refusal()) is not None:
                record(remaining, [refusal] * len(remaining), host.name, host.name, host.name)
                continue
            for addr in host.addresses:
                if not remaining:
                    break
                try:
                    conn = await self._open_mx(host.name, addr, rule)
                except Failure as exc:
                    where = f"{host.name}[{addr}]:{self.settings.remote_port}"
                    record(remaining, [exc.reply] * len(remaining), where, host.name, host.name)
                    continue  # next address / next MX
                try:
                    replies = await self._transact(conn, env, payload, body8, remaining)
                except Failure as exc:
                    conn.abort()
                    record(remaining, [exc.reply] * len(remaining), conn.server, host.name, host.name)
                    if conn.payload_sent:
                        # Lost after the message went out: it may have arrived.
                        # Retry later (RFC 5321 6.1) rather than send a second copy elsewhere now.
                        return [results[i] for i, _ in rcpts]
                    continue
                record(remaining, replies, conn.server, host.name, host.name)
                if remaining or any(r.code == 421 for r in replies):
                    await conn.quit()  # 4xx here: the next host gets its chance
                else:
                    self._drop()
                    self.conn = conn  # kept for the next message to this domain
                    break
            if not remaining:
                break
        return [results[i] for i, _ in rcpts]
