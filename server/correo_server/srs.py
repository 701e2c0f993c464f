"""SRS, the Sender Rewriting Scheme, for mail forwarded to another domain.

When a mailbox forwards (``forwardTo``) to a remote domain, the message
leaves with its original envelope sender, which our servers are not allowed
to send for: SPF fails at the receiver.  SRS rewrites that sender into an
address at our own domain that encodes the original, signed, so that SPF
passes, and a bounce coming back to it can be routed to the real sender,
while nobody else can use our domain as an open bounce relay.

The format is the one libsrs2, postsrsd and Exim use (Shevek's SRS paper):

* ``SRS0=HHHH=TT=orig.domain=orig-local@our.domain``: ``TT`` is the day
  (days since the epoch, modulo 1024) in two base32 characters, ``HHHH``
  the first four characters of the base64 HMAC-SHA1, under our secret, of
  ``TT``, the domain and the local part (lower-cased: case may be changed in
  transit);
* forwarding an address that is already SRS0 (a second hop) makes it
  ``SRS1=HHHH=first.forwarder==HHHH=TT=orig.domain=orig-local@our.domain``,
  so that bounces travel back through the first forwarder.

:meth:`Srs.reverse` checks the hash and the age (21 days by default) and
gives back the address to deliver the bounce to; anything else is
:class:`SrsError` (the relay refuses it at RCPT with :func:`refusal`).

The secret comes from a file with one key per line (like the DKIM key, the
operator generates it into a Secret): the first line signs, every line
verifies, so that a key can be rotated without losing bounces in flight.
Each hosted domain has its own key file (``Domain.srsKeyFile``; the
operator keeps it in a Secret, ``correo up`` in its data folder):
:class:`SrsDomains` holds one :class:`Srs` per domain, what the relay
(reversing bounce addresses at RCPT) and the queue (rewriting the sender of
forwards, :func:`forward_sender`) use.

Which domain signs: the one the queue says the message belongs to
(:mod:`correo_server.queue.ownership`).  A Sieve ``redirect`` of mail from a
stranger to a stranger has no hosted address in its envelope, so the
mailstore names the redirecting mailbox's domain with the private LMTP MAIL
parameter :data:`OWNER_PARAM` (``XOWNER=example.com``, sent only to a queue
that announces it), and the queue records it as the message's owner.

Pure apart from the injected clock; no I/O but :func:`load_keys` and
:meth:`SrsDomains.from_config`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .config import ServerConfig

from .replytext import printable
from .wire.replies import Reply

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TIME_PRECISION = 86400  # one day
TIME_SLOTS = 1024  # timestamps wrap after 1024 days
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
SEP = "="
OWNER_PARAM = "XOWNER"  # MAIL parameter: the hosted domain a message is passed on for (see above)

_SRS0 = re.compile(r"^SRS0[=+-](.*)$", re.I)
_SRS1 = re.compile(r"^SRS1[=+-](.*)$", re.I)


class SrsError(ValueError):
    """An address that is not a valid SRS address of ours."""


def generate_key() -> str:
    """A new secret: 32 random bytes, URL-safe base64 (one line of the key file)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")


def load_keys(path: str | Path) -> list[bytes]:
    """The keys in a key file, one per line (blank lines and ``#`` comments
    ignored).  Raises ValueError when there is none."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    keys = [line.strip().encode("utf-8") for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ValueError(f"{path}: no SRS key in the file")
    return keys


def is_srs(address: str) -> bool:
    local = address.rpartition("@")[0]
    return bool(_SRS0.match(local) or _SRS1.match(local))


class Srs:
    def __init__(self, keys: list[bytes], domain: str, *, clock: Callable[[], float] = time.time,
                 max_age_days: int = MAX_AGE_DAYS) -> None:
        if not keys:
            raise ValueError("SRS needs at least one key")
        self.keys = list(keys)
        self.domain = domain.lower().rstrip(".")
        self.clock = clock
        self.max_age_days = max_age_days

    # -- pieces ---------------------------------------------------------------
    def _hash(self, key: bytes, *data: str) -> str:
        mac = hmac.new(key, digestmod=hashlib.sha1)
        for item in data:
            mac.update(item.lower().encode("utf-8"))
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]

    def _today(self) -> int:
        return int(self.clock() // TIME_PRECISION) % TIME_SLOTS

    def timestamp(self) -> str:
        day = self._today()
        return BASE32[(day >> 5) & 31] + BASE32[day & 31]

    def _check_hash(self, given: str, *data: str) -> bool:
        given = given.lower()
        return any(hmac.compare_digest(self._hash(key, *data).lower(), given) for key in self.keys)

    def _check_timestamp(self, stamp: str) -> None:
        if len(stamp) != 2 or any(c not in BASE32 for c in stamp.upper()):
            raise SrsError(f"SRS timestamp {stamp!r} is not valid")
        then = (BASE32.index(stamp[0].upper()) << 5) | BASE32.index(stamp[1].upper())
        age = (self._today() - then) % TIME_SLOTS
        if age > self.max_age_days:
            raise SrsError(f"SRS address is {age} days old (at most {self.max_age_days})")

    # -- rewriting -----------------------------------------------------------
    def forward(self, sender: str) -> str:
        """The envelope sender to use when forwarding mail from ``sender``.
        The null sender stays null; addresses already ours stay as they are."""
        if not sender or "@" not in sender:
            return sender
        local, _, domain = sender.rpartition("@")
        if domain.lower().rstrip(".") == self.domain:
            return sender
        key = self.keys[0]
        m0, m1 = _SRS0.match(local), _SRS1.match(local)
        if m1:  # SRS1=HHHH=first==rest: keep the first forwarder, sign again
            first, sep, rest = m1.group(1)[HASH_LENGTH + 1:].partition(SEP + SEP)
            if sep and first:
                return f"SRS1{SEP}{self._hash(key, first, rest)}{SEP}{first}{SEP}{SEP}{rest}@{self.domain}"
        if m0:  # someone else's SRS0: become the second hop
            rest = m0.group(1)
            return f"SRS1{SEP}{self._hash(key, domain, rest)}{SEP}{domain}{SEP}{SEP}{rest}@{self.domain}"
        stamp = self.timestamp()
        return f"SRS0{SEP}{self._hash(key, stamp, domain, local)}{SEP}{stamp}{SEP}{domain}{SEP}{local}@{self.domain}"

    def reverse(self, address: str) -> str:
        """The address a bounce to ``address`` (an SRS address at our domain)
        goes to.  Raises :class:`SrsError` when it is not valid."""
        local, at, domain = address.rpartition("@")
        if not at:
            raise SrsError(f"{address!r} is not an address")
        m0, m1 = _SRS0.match(local), _SRS1.match(local)
        if m1:
            parts = m1.group(1)
            given, sep, after = parts.partition(SEP)
            first, sep2, rest = after.partition(SEP + SEP)
            if not sep or not sep2 or not first or not rest:
                raise SrsError(f"{address!r} is not a well-formed SRS1 address")
            if not self._check_hash(given, first, rest):
                raise SrsError(f"{address!r} does not carry our signature")
            return f"SRS0{SEP}{rest}@{first}"
        if m0:
            fields = m0.group(1).split(SEP, 3)
            if len(fields) != 4 or not all(fields):
                raise SrsError(f"{address!r} is not a well-formed SRS0 address")
            given, stamp, orig_domain, orig_local = fields
            if not self._check_hash(given, stamp, orig_domain, orig_local):
                raise SrsError(f"{address!r} does not carry our signature")
            self._check_timestamp(stamp)
            return f"{orig_local}@{orig_domain}"
        raise SrsError(f"{address!r} is not an SRS address")


def refusal(error: SrsError) -> Reply:
    """The reply for a recipient that looks like SRS but is not ours (a
    forged or expired bounce address): permanent, at RCPT."""
    return Reply(550, "5.1.1", printable(f"Invalid bounce address: {error}"), "srs_invalid")


class SrsDomains:
    """One :class:`Srs` per hosted domain (its alias domains share it)."""

    def __init__(self, by_name: dict[str, Srs]) -> None:
        self.by_name = {name.lower().rstrip("."): srs for name, srs in by_name.items()}

    @classmethod
    def from_config(cls, cfg: "ServerConfig", *, clock: Callable[[], float] = time.time,
                    on_error: Callable[[str, Exception], None] | None = None) -> "SrsDomains":
        """The key files of ``cfg``'s domains; a file that cannot be read
        leaves its domain without SRS (``on_error(domain, exc)`` hears why)."""
        found: dict[str, Srs] = {}
        for domain in cfg.domains:
            if not domain.srs_key_file:
                continue
            try:
                keys = load_keys(cfg.path(domain.srs_key_file))
            except (OSError, ValueError) as exc:
                if on_error is not None:
                    on_error(domain.name, exc)
                continue
            srs = Srs(keys, domain.name, clock=clock)
            for name in domain.all_names:
                found[name] = srs
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def for_domain(self, name: str) -> Srs | None:
        return self.by_name.get(name.lower().rstrip("."))

    def reverse(self, address: str) -> str:
        """:meth:`Srs.reverse` with the keys of the address's domain."""
        srs = self.for_domain(address.rpartition("@")[2])
        if srs is None:
            raise SrsError(f"{address!r}: no SRS keys for its domain")
        return srs.reverse(address)


def forward_sender(srs: SrsDomains | None, sender: str, domain: str, is_hosted: Callable[[str], bool]) -> str:
    """The envelope sender for mail the queue passes on to another domain
    (a ``forwardTo``, a Sieve redirect, a bounce reversed at RCPT): SRS at
    ``domain`` (the hosted domain the message belongs to) when the sender is
    not ours, so that SPF passes where it goes; unchanged otherwise (our own
    senders, the null sender, no keys)."""
    if not sender or "@" not in sender or srs is None:
        return sender
    if is_hosted(sender.rpartition("@")[2]):
        return sender
    domain_srs = srs.for_domain(domain)
    return domain_srs.forward(sender) if domain_srs is not None else sender
