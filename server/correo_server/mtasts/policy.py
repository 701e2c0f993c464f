"""MTA-STS policies and TXT records (RFC 8461 sections 3.1, 3.2, 4.1); pure.

A policy file, served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``::

    version: STSv1
    mode: enforce
    mx: mail.example.com
    max_age: 604800

and its announcement, the TXT record ``_mta-sts.<domain>``::

    v=STSv1; id=3f2c9a0b1d4e5f60718293a4

Publishing: :func:`render` writes the policy file of a hosted domain (CRLF
lines, fields in the RFC's order) and :func:`policy_id` its id, a digest of
the file's bytes, so that the id changes exactly when the policy does.

Reading: :func:`parse` checks a receiver's file against the RFC's ABNF
(unknown fields are ignored, as the RFC asks; the first of a repeated field
other than ``mx`` counts) and :func:`parse_txt` picks the one ``v=STSv1``
record out of a TXT answer.  Both raise :class:`PolicyError` with a reason a
person can act on.  :func:`mx_matches` is the MX pattern rule of section 4.1.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MODES = ("none", "testing", "enforce")
MAX_AGE_LIMIT = 31557600  # one year, the RFC's maximum
MAX_POLICY_BYTES = 64 * 1024  # the RFC's suggested limit for a fetched policy
WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+\.?$")
_EXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_FIELD = re.compile(r"^([^:\s]*):[ \t]*(.*?)[ \t]*$")
_TXT_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_TXT_EXT_VALUE = re.compile(r"^[\x21-\x3a\x3c\x3e-\x7e]+$")


class PolicyError(ValueError):
    """A policy file or TXT record that does not follow RFC 8461."""


@dataclass(frozen=True)
class Policy:
    mode: str  # "none", "testing" or "enforce"
    max_age: int  # seconds a sender may cache it
    mx: tuple[str, ...]  # MX patterns: "mail.example.com", "*.example.net"

    def matches(self, host: str) -> bool:
        """Whether an MX host name is one the policy allows."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def render(mode: str, max_age: int, mx: tuple[str, ...] | list[str]) -> str:
    """The policy file of a hosted domain: version, mode, one line per MX
    pattern, max_age; CRLF line ends."""
    if mode not in MODES:
        raise PolicyError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be between 0 and {MAX_AGE_LIMIT}")
    patterns = list(dict.fromkeys(p.lower().rstrip(".") for p in mx))
    for p in patterns:
        if not _DOMAIN.match(p.removeprefix("*.")):
            raise PolicyError(f"{p!r} is not an MX pattern (a host name, or *. and a domain)")
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {p}" for p in patterns), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def policy_id(text: str) -> str:
    """The id announced in the TXT record: 24 hex digits of the file's SHA-256
    (RFC 8461 allows 1 to 32 letters and digits)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def txt_record(text: str) -> str:
    """The value of the ``_mta-sts`` TXT record announcing policy ``text``."""
    return f"v=STSv1; id={policy_id(text)}"


def parse(text: str) -> Policy:
    """A receiver's policy file, checked against RFC 8461's grammar."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes")
    body = text.rstrip("\r\n")  # the last line's terminator is optional (and blank lines after it harmless)
    if not body:
        raise PolicyError("the policy is empty")
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(body.split("\n"), start=1):
        line = line.removesuffix("\r")
        if "\r" in line:
            raise PolicyError(f"line {number}: a bare CR (lines end with LF or CRLF)")
        m = _FIELD.match(line)
        if not m:
            raise PolicyError(f"line {number}: expected 'name: value', got {line[:60]!r}")
        name, value = m.groups()
        if name == "mx":
            pattern = value.lower().rstrip(".")
            if not _DOMAIN.match(pattern.removeprefix("*.")):
                raise PolicyError(f"line {number}: {value!r} is not an MX pattern")
            mx.append(pattern)
        elif name in ("version", "mode", "max_age"):
            fields.setdefault(name, value)
        elif not _EXT_NAME.match(name) or not value:
            raise PolicyError(f"line {number}: {line[:60]!r} is not a policy field")
    if fields.get("version") != "STSv1":
        raise PolicyError("no 'version: STSv1' line" if "version" not in fields
                          else f"version {fields['version']!r} is not STSv1")
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError("no 'mode' line" if mode is None else f"mode {mode!r} is not none, testing or enforce")
    age = fields.get("max_age")
    if age is None or not age.isascii() or not age.isdigit() or len(age) > 10:
        raise PolicyError("no 'max_age' line" if age is None else f"max_age {age!r} is not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError(f"a policy in mode {mode} names no mx")
    return Policy(mode=mode, max_age=min(int(age), MAX_AGE_LIMIT), mx=tuple(mx))


def parse_txt(strings: list[str]) -> str | None:
    """The policy id of a ``_mta-sts`` TXT answer (each record's strings
    joined), or None when there is no ``v=STSv1`` record.  Raises
    :class:`PolicyError` when there are several, or the one is malformed:
    RFC 8461 section 3.1 treats both as no policy."""
    records = [s for s in strings if s.startswith("v=STSv1;") or s.strip() == "v=STSv1"]
    if not records:
        return None
    if len(records) > 1:
        raise PolicyError(f"{len(records)} v=STSv1 TXT records (exactly one is allowed)")
    parts = [p.strip(" \t") for p in records[0].split(";")]
    if parts and parts[-1] == "":
        parts.pop()  # a trailing ";"
    found = None
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        if not eq or not _EXT_NAME.match(name) or not _TXT_EXT_VALUE.match(value):
            raise PolicyError(f"TXT field {part!r} is malformed")
        if name == "id" and found is None:
            if not _TXT_ID.match(value):
                raise PolicyError(f"TXT id {value!r} must be 1 to 32 letters and digits")
            found = value
    if found is None:
        raise PolicyError("the TXT record has no id")
    return found


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 section 4.1: ``mail.example.com`` matches itself; ``*.example.com``
    matches one more label on the left (``mx1.example.com``), never two, never
    ``example.com`` itself.  Case-insensitive, trailing dots ignored."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, dot, rest = host.partition(".")
        return bool(head) and bool(dot) and rest == pattern[2:]
    return host == pattern
