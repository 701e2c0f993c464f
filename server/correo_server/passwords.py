"""Password hashes in Dovecot's ``{SCHEME}hash`` notation: make and check them.

Only hashes are ever stored in the mailbox directory.  Three schemes are read:

* ``{ARGON2ID}$argon2id$v=19$m=...,t=...,p=...$salt$hash`` (argon2-cffi)
* ``{BCRYPT}$2b$12$...`` (also ``$2a$``/``$2y$``; the bcrypt package)
* ``{SHA512-CRYPT}$6$rounds=N$salt$hash`` (glibc's SHA-crypt, implemented here
  because the stdlib ``crypt`` module is going away)

A hash without a ``{SCHEME}`` prefix is recognised by its own ``$id$``.  The
renderer hashes plaintext passwords with :func:`hash_password`, which takes the
salt as an argument so that the same input gives the same bytes (render is pure).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re

import argon2
import argon2.low_level
import bcrypt as _bcrypt

SCHEMES = ("ARGON2ID", "BCRYPT", "SHA512-CRYPT")

# OWASP's minimum for argon2id (19 MiB, 2 passes, 1 lane): a login costs ~20 ms.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_PARALLELISM = 1

_SCHEME_RE = re.compile(r"^\{([A-Z0-9-]+)\}(.*)$", re.S)
_hasher = argon2.PasswordHasher()


class UnknownScheme(ValueError):
    pass


def split_scheme(stored: str) -> tuple[str, str]:
    """``{BCRYPT}$2b$...`` → (``BCRYPT``, ``$2b$...``); bare hashes by their ``$id$``."""
    m = _SCHEME_RE.match(stored)
    if m:
        return m.group(1).upper(), m.group(2)
    if stored.startswith("$argon2id$"):
        return "ARGON2ID", stored
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        return "BCRYPT", stored
    if stored.startswith("$6$"):
        return "SHA512-CRYPT", stored
    raise UnknownScheme("not a recognised password hash")


def looks_like_hash(value: str) -> bool:
    """True for anything written as a ``{SCHEME}...`` value or a ``$id$...``
    crypt string, valid or not."""
    return bool(_SCHEME_RE.match(value)) or value.startswith(("$argon2", "$2a$", "$2b$", "$2y$", "$6$"))


_VALID = {
    "ARGON2ID": re.compile(r"^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$"),
    "BCRYPT": re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"),
    "SHA512-CRYPT": re.compile(r"^\$6\$(rounds=\d+\$)?[^$:\n]{0,16}\$[./A-Za-z0-9]{86}$"),
}


def is_hash(value: str) -> bool:
    """True when ``value`` is a well-formed hash correo can check (not a
    plaintext password, not a mangled hash)."""
    try:
        scheme, rest = split_scheme(value.strip())
    except UnknownScheme:
        return False
    pattern = _VALID.get(scheme)
    return bool(pattern and pattern.match(rest))


@functools.lru_cache(maxsize=4096)
def hash_password(password: str, salt: bytes) -> str:
    """argon2id hash of ``password`` with the given salt (at least 8 bytes).

    Deterministic, so cached: re-rendering a directory of many mailboxes costs
    one argon2 run per mailbox per process, not per render.
    """
    if len(salt) < 8:
        raise ValueError("salt must be at least 8 bytes")
    encoded = argon2.low_level.hash_secret(
        password.encode("utf-8"),
        salt,
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        hash_len=32,
        type=argon2.low_level.Type.ID,
    )
    return "{ARGON2ID}" + encoded.decode("ascii")


def verify(stored: str, password: str) -> bool:
    """Check ``password`` against a stored hash; False for a wrong password or an
    unusable hash (never raises on bad input)."""
    try:
        scheme, value = split_scheme(stored)
    except UnknownScheme:
        return False
    pw = password.encode("utf-8")
    try:
        if scheme == "ARGON2ID":
            return _hasher.verify(value, pw)
        if scheme == "BCRYPT":
            if len(pw) > 72:  # bcrypt 5 refuses, older versions truncated
                pw = pw[:72]
            return _bcrypt.checkpw(pw, value.encode("ascii"))
        if scheme == "SHA512-CRYPT":
            return hmac.compare_digest(sha512_crypt(password, value), value)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError, ValueError):
        return False
    return False


# ---------------------------------------------------------------------------
# SHA-512 crypt ($6$), after Ulrich Drepper's "Unix crypt using SHA-256 and
# SHA-512" specification.
# ---------------------------------------------------------------------------

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ROUNDS_DEFAULT = 5000
_ROUNDS_MIN = 1000
_ROUNDS_MAX = 999_999_999

# The byte order in which the 64-byte digest is written out, three bytes at a time.
_ORDER = [
    (0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
    (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
    (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38),
    (18, 39, 60), (40, 61, 19), (62, 20, 41),
]


def _b64_from_24bit(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(_ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def sha512_crypt(password: str, setting: str) -> str:
    """The ``$6$...`` crypt string of ``password`` for the salt/rounds in ``setting``
    (which may be a whole existing hash)."""
    if not setting.startswith("$6$"):
        raise ValueError("not a SHA512-CRYPT setting")
    rest = setting[3:]
    rounds = _ROUNDS_DEFAULT
    explicit_rounds = False
    if rest.startswith("rounds="):
        num, _, rest = rest[7:].partition("$")
        if not num.isdigit():
            raise ValueError("bad rounds")
        rounds = max(_ROUNDS_MIN, min(int(num), _ROUNDS_MAX))
        explicit_rounds = True
    salt = rest.split("$", 1)[0][:16].encode("utf-8")
    key = password.encode("utf-8")

    b = hashlib.sha512(key + salt + key).digest()
    a = hashlib.sha512(key + salt)
    n = len(key)
    while n > 64:
        a.update(b)
        n -= 64
    a.update(b[:n])
    n = len(key)
    while n:
        a.update(b if n & 1 else key)
        n >>= 1
    a_digest = a.digest()

    dp = hashlib.sha512(key * len(key)).digest()
    p = (dp * (len(key) // 64 + 1))[: len(key)]
    ds = hashlib.sha512(salt * (16 + a_digest[0])).digest()
    s = (ds * (len(salt) // 64 + 1))[: len(salt)]

    c = a_digest
    for i in range(rounds):
        h = hashlib.sha512()
        h.update(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()

    encoded = "".join(_b64_from_24bit(c[x], c[y], c[z], 4) for x, y, z in _ORDER)
    encoded += _b64_from_24bit(0, 0, c[63], 2)
    prefix = f"$6$rounds={rounds}$" if explicit_rounds else "$6$"
    return f"{prefix}{salt.decode('utf-8')}${encoded}"


def stable_salt(*parts: str) -> bytes:
    """A 16-byte salt derived from ``parts`` (render uses the Secret's identity),
    so that re-rendering gives the same hash; never a random value."""
    digest = hashlib.sha256("\x00".join(("correo-password-salt", *parts)).encode("utf-8")).digest()
    return base64.b64encode(digest)[:16]
