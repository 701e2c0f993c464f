"""Verified logins, remembered for a while: Dovecot's ``auth_cache`` for
correo's password checks (:func:`correo_server.login.check_login`).

A password hash is slow on purpose (argon2id: ~20 ms of CPU and 19 MiB per
check); a client that logs in again and again with the same password (mail
clients that open a connection per folder, sync tools, imaptest) would
spend most of the server's CPU on it.  After a successful check the cache
keeps, per mailbox address, the stored hash that was checked and a keyed
digest of the password (HMAC-SHA-256 under a random key made when the
process starts, never written anywhere).  The next login with the same
password, while the directory still holds the same hash, within
``auth.loginCacheSeconds``, is accepted without the slow check.

What invalidates an entry at once:

- a password change: the directory's hash is no longer the one checked, so
  the entry does not match (and is dropped) — the new password is checked
  the slow way, the old one fails;
- a suspension: :func:`~correo_server.login.check_login` reads
  ``suspended`` from the directory at every login, cached or not, and drops
  the entry;
- a wrong password: never cached (no negative cache), so guessing costs the
  full hash and the login throttle's delay every time.

The trade-off, written down: for ``loginCacheSeconds`` after a login, the
process memory holds an HMAC of the password whose key is in the same
memory, so someone able to read the mailstore's memory could test guesses
against it at HMAC speed instead of argon2 speed — for the users who logged
in recently.  Such a reader could also see passwords as they arrive, so the
cache adds little to that exposure; it adds nothing for anyone without it
(nothing is on disk, the key dies with the process).  ``loginCacheSeconds:
0`` turns it off (every login pays the full hash, as with Dovecot's default
``auth_cache_size = 0``).  Entries are bounded by ``auth.loginCacheEntries``
(least recently used go first).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class _Entry:
    stored_hash: str
    digest: bytes
    expires: float


class LoginCache:
    def __init__(self, ttl_seconds: float = 3600.0, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = float(ttl_seconds)
        self.max_entries = max_entries
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_settings(cls, auth, clock: Callable[[], float] = time.monotonic) -> "LoginCache":
        return cls(auth.login_cache_seconds, auth.login_cache_entries, clock)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def _digest(self, address: str, password: str) -> bytes:
        return hmac.new(self._key, address.encode("utf-8") + b"\0" + password.encode("utf-8"),
                        hashlib.sha256).digest()

    def verified(self, address: str, stored_hash: str, password: str) -> bool:
        """True when this password was verified against this same stored
        hash within the TTL."""
        if not self.enabled:
            return False
        entry = self._entries.get(address)
        if entry is None:
            self.misses += 1
            return False
        if entry.stored_hash != stored_hash or self.clock() >= entry.expires:
            del self._entries[address]  # password changed, or too old
            self.misses += 1
            return False
        if not hmac.compare_digest(entry.digest, self._digest(address, password)):
            self.misses += 1  # another password: checked the slow way (and the entry stays)
            return False
        self._entries.move_to_end(address)
        self.hits += 1
        return True

    def remember(self, address: str, stored_hash: str, password: str) -> None:
        """A password the slow check accepted for this stored hash."""
        if not self.enabled:
            return
        self._entries[address] = _Entry(stored_hash, self._digest(address, password), self.clock() + self.ttl)
        self._entries.move_to_end(address)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, address: str) -> None:
        self._entries.pop(address, None)

    def __len__(self) -> int:
        return len(self._entries)
