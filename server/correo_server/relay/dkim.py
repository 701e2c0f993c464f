"""DKIM signatures (RFC 6376) for mail that authenticated users send from
hosted domains, with keys from the configuration folder.

Which domain signs: the domain of the ``From:`` header when it is hosted and
has a key (so that the signature aligns for DMARC), else the envelope
sender's domain when that is hosted and has a key; ``d=`` is that domain as written (its A-label form for
internationalised names), the key and ``s=`` come from its
:class:`~correo_server.config.Domain` (``dkimKeyFile``, ``dkimSelector``), so
alias domains sign with their main domain's key and need the same DNS record
published under their own name.  A message with more than one ``From:``
header is not signed (a classic way to make a signature lie).  Only mail
from authenticated sessions is signed: :mod:`.smtp` never calls this for mail
that arrives on port 25, whatever its ``From:`` says, because signing it
would vouch for a stranger.

Keys are RSA in PEM form (PKCS#1 or PKCS#8), read when first needed and read
again when the file changes (cert-manager style rotation without restart).
No key file: no signature, and a warning once per domain.  Canonicalisation
is relaxed/relaxed, the algorithm rsa-sha256; ``From`` is signed twice
(dkimpy's default) so that no second ``From:`` can be added later.
"""
from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import os
from pathlib import Path

import dkim as dkimpy

from .. import logs
from ..config import Domain, ServerConfig
from .policy import hosted_domain

log = logs.get(__name__)

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def header_section(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def from_domains(message: bytes) -> list[str]:
    """The domains of the addresses in each ``From:`` header field."""
    headers = _HEADER_PARSER.parsebytes(header_section(message))
    out = []
    for value in headers.get_all("From") or []:
        addresses = email.utils.getaddresses([str(value)])
        domain = ""
        for _name, addr in addresses:
            if "@" in addr:
                domain = addr.rpartition("@")[2].strip().lower().rstrip(".")
                break
        out.append(domain)
    return out


def _dns_name(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return domain


class DkimSigner:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._keys: dict[Path, tuple[tuple[int, int, int], bytes]] = {}
        self._warned: set[str] = set()

    def signing_domains(self, message: bytes, envelope_sender: str | None) -> list[tuple[str, Domain]]:
        """Candidates for d=, best first: the ``From:`` domain, then the
        envelope sender's, each only when hosted.  Empty when the message is
        not ours to sign (nothing hosted, or several ``From:`` fields)."""
        domains = from_domains(message)
        if len(domains) > 1:
            return []
        out: list[tuple[str, Domain]] = []
        for candidate in (domains[0] if domains else "", (envelope_sender or "").rpartition("@")[2].lower()):
            hosted = hosted_domain(self.config, candidate)
            if hosted is not None and candidate not in (d for d, _ in out):
                out.append((candidate, hosted))
        return out

    def key_for(self, domain: Domain) -> bytes | None:
        if not domain.dkim_key_file:
            return None
        path = self.config.path(domain.dkim_key_file)
        try:
            st = os.stat(path)
        except OSError:
            if domain.name not in self._warned:
                self._warned.add(domain.name)
                log.warning("dkim_key_missing", domain=domain.name, path=str(path))
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._keys.get(path)
        if cached and cached[0] == signature:
            return cached[1]
        key = path.read_bytes()
        self._keys[path] = (signature, key)
        self._warned.discard(domain.name)
        return key

    def sign_now(self, message: bytes, envelope_sender: str | None) -> bytes | None:
        """The ``DKIM-Signature:`` header field (ending with CRLF) to put on top
        of ``message``, or None when it is not to be signed (or cannot be)."""
        for d, domain in self.signing_domains(message, envelope_sender):
            key = self.key_for(domain)
            if key is not None:
                break
        else:
            return None
        try:
            return dkimpy.sign(message, domain.dkim_selector.encode("ascii"), _dns_name(d).encode("ascii"), key,
                               canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n")
        except (dkimpy.DKIMException, ValueError, UnicodeError) as exc:
            log.warning("dkim_sign_failed", domain=d, error=str(exc))
            return None

    async def sign(self, message: bytes, envelope_sender: str | None) -> bytes | None:
        """:meth:`sign_now` in a worker thread (hashing a large message and the
        RSA operation would stall the event loop)."""
        return await asyncio.to_thread(self.sign_now, message, envelope_sender)
