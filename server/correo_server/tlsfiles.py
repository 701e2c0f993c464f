"""TLS for the servers: a server context that follows its certificate files.

cert-manager renews a ``kubernetes.io/tls`` Secret in place; the servers pick
the new pair up without a restart.  :class:`ServerTLS` holds one
``ssl.SSLContext`` that every listener uses (implicit TLS and STARTTLS); its
SNI callback, which OpenSSL calls on every handshake, swaps in a context
built from the current files whenever they changed.
"""
from __future__ import annotations

import ssl
from pathlib import Path

from .config import ServerConfig
from .directory import Reloading
from . import logs

log = logs.get(__name__)


def _build(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


class ServerTLS:
    def __init__(self, cert_file: Path, key_file: Path, *, interval: float = 5.0) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self._current = Reloading(
            [self.cert_file, self.key_file],
            lambda: _build(self.cert_file, self.key_file),
            interval=interval,
            on_error=lambda exc: log.warning("tls_reload_failed", error=str(exc), cert=str(self.cert_file)),
            on_reload=lambda _ctx: log.info("tls_reloaded", cert=str(self.cert_file)),
        )
        self.context = _build(self.cert_file, self.key_file)
        self.context.sni_callback = self._sni
        self._expiry: tuple[tuple[int, int, int], float] | None = None

    def not_after(self) -> float | None:
        """When the certificate in ``cert_file`` (the first of its chain)
        expires, as Unix time; None when it cannot be read.  For the
        ``correo_tls_certificate_expiry_timestamp_seconds`` gauge; parsed
        again only when the file changes."""
        try:
            st = self.cert_file.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._expiry is None or self._expiry[0] != stamp:
                from cryptography import x509  # only when scraped
                cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
                self._expiry = (stamp, cert.not_valid_after_utc.timestamp())
        except (OSError, ValueError) as exc:
            log.warning("tls_certificate_unreadable", cert=str(self.cert_file), error=str(exc))
            return None
        return self._expiry[1]

    def _sni(self, sslobj: ssl.SSLObject, _server_name, _ctx) -> None:
        sslobj.context = self._current.get()
        return None

    @classmethod
    def from_config(cls, config: ServerConfig) -> "ServerTLS | None":
        """None when the configuration names no key pair (then no STARTTLS is
        offered and TLS ports are not opened)."""
        if config.tls is None:
            return None
        cert, key = config.path(config.tls.cert_file), config.path(config.tls.key_file)
        if not cert.exists() or not key.exists():
            log.warning("tls_files_missing", cert=str(cert), key=str(key))
            return None
        return cls(cert, key)


def client_context(verify: bool = False) -> ssl.SSLContext:
    """For outbound opportunistic STARTTLS: encryption without authentication,
    as MTAs do (RFC 7435), unless ``verify`` is set."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
