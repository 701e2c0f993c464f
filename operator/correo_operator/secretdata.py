"""The values in Kubernetes Secrets that correo reads: passwords, the TLS pair,
smarthost credentials, the DKIM key.

Secrets stay plain dicts (as the API or the YAML has them, ``data`` in base64
or ``stringData``); this module is the one reader of their values.  ``render``
hashes passwords from them, ``loading`` checks them, ``status`` only ever sees
:func:`usable_keys` (names of keys, never values).
"""
from __future__ import annotations

import base64
from typing import Any

from correo_server import passwords


def decode(raw: Any) -> str | None:
    """A ``data`` value as text; None when it is not base64 of UTF-8."""
    try:
        return base64.b64decode(str(raw), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def has_key(secret: dict, key: str) -> bool:
    return key in (secret.get("data") or {}) or key in (secret.get("stringData") or {})


def secret_value(secret: dict, key: str) -> str | None:
    """The decoded value of ``key`` in a Secret object (``data`` or ``stringData``);
    None when absent or not decodable."""
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    raw = (secret.get("data") or {}).get(key)
    return None if raw is None else decode(raw)


def usable_keys(secret: dict) -> frozenset[str]:
    """The keys of a Secret whose value can be used: decodable, not empty, not
    a mangled hash.  This is what status gets (values never leave here)."""
    keys = set((secret.get("data") or {})) | set((secret.get("stringData") or {}))
    return frozenset(k for k in keys if secret_value(secret, k) is not None
                     and password_problem(secret_value(secret, k)) is None)


def password_problem(value: str | None) -> str | None:
    """Why a Secret's password value cannot be used, or None.  An empty value
    would be a mailbox anyone can log in to; a value dressed as a hash that is
    not one would be taken for a password."""
    if value is None:
        return None
    if not value.strip():
        return "is empty: a mailbox without a password could be logged in to by anyone"
    if passwords.looks_like_hash(value) and not passwords.is_hash(value):
        return "looks like a {SCHEME} hash but is not a valid ARGON2ID, BCRYPT or SHA512-CRYPT hash"
    return None
