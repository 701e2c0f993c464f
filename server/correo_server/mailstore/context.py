"""What the mailstore's listeners share: one object built by the service and
handed to the IMAP, POP3 and LMTP servers.

Nothing here does I/O; :mod:`correo_server.mailstore.service` builds it from a
configuration folder, tests build it directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..config import ServerConfig
from ..directory import Directory, Reloading
from ..guard import ConnectionGate, InflightBudget, LoginThrottle
from ..logincache import LoginCache
from ..metrics import Registry
from ..tlsfiles import ServerTLS
from .junk import JunkLog
from .refusals import RefusalLog

if TYPE_CHECKING:  # the store is defined in .store
    from .store import Store


@dataclass
class MailstoreContext:
    config: ServerConfig
    directory: Reloading[Directory]
    store: "Store"
    tls: ServerTLS | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    login_cache: LoginCache = field(default_factory=LoginCache)  # verified logins (IMAP and POP3)
    metrics: Registry = field(default_factory=Registry)
    # One gate per protocol family, so that IMAP clients cannot starve POP3.
    imap_gate: ConnectionGate | None = None
    imap_literals: InflightBudget | None = None  # literals held at once over all IMAP sessions
    pop3_gate: ConnectionGate | None = None
    managesieve_gate: ConnectionGate | None = None
    clock: Callable[[], float] | None = None  # time.time unless a test injects one
    refusals: RefusalLog = field(default_factory=RefusalLog)  # mail refused per mailbox (LMTP → /status)
    proxy: Any = None  # ..proxyauth.ProxyCredential: logins of correo serve proxy (None: none)
    rules: Any = None  # .rules.delivery.DeliveryRules: Sieve and auto-replies at delivery (None: every message to INBOX)
    junk: JunkLog = field(default_factory=JunkLog)  # mail delivered into Junk per mailbox (LMTP → /status)
