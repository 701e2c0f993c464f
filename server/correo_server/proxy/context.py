"""What the proxy's listeners share (built by :mod:`.service`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ServerConfig
from ..directory import Directory, Reloading
from ..guard import ConnectionGate, LoginThrottle, plaintext_login_allowed
from ..logincache import LoginCache
from ..login import LoginResult, check_login
from ..metrics import Registry
from ..proxyauth import ProxyCredential
from ..tlsfiles import ServerTLS


@dataclass
class ProxyContext:
    config: ServerConfig
    directory: Reloading[Directory]
    credential: ProxyCredential
    tls: ServerTLS | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    login_cache: LoginCache = field(default_factory=LoginCache)
    metrics: Registry = field(default_factory=Registry)
    gate: ConnectionGate | None = None
    sessions: set = field(default_factory=set)  # live client tasks

    def plaintext_allowed(self, peer: str, tls_active: bool) -> bool:
        return plaintext_login_allowed(self.config.auth, peer, tls_active)

    async def check(self, peer: str, user: str, password: str) -> LoginResult:
        return await check_login(self.directory.get(), self.throttle, peer, user, password, self.login_cache)
